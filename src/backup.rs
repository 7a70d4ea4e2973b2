//! The backup file: a versioned, checksummed copy of every stored key and
//! value, written by a running server and restored into an empty data dir.
//!
//! ```text
//! "SWARMDESK-BACKUP" (16 bytes)  format version (u32 BE)
//! repeated: 0x01  key length (u32 BE)  key  value length (u32 BE)  value
//! 0x00  pair count (u64 BE)  CRC-32 of every byte before it (u32 BE)
//! ```
//! A file is accepted only whole: magic, version, count and checksum must
//! all match, so a truncated or corrupted file is refused before anything
//! is written.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::store::{Import, Pair, StoreError};

const MAGIC: &[u8; 16] = b"SWARMDESK-BACKUP";
const FORMAT_VERSION: u32 = 1;
const PAIR: u8 = 1;
const END: u8 = 0;
/// Longest key or value accepted when reading (a sanity bound, not a format limit).
const MAX_FIELD: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("not a swarmdesk backup (bad magic)")]
    NotABackup,
    #[error("backup format {0} is newer than this build reads ({FORMAT_VERSION})")]
    NewerFormat(u32),
    #[error("backup is truncated")]
    Truncated,
    #[error("backup is corrupted: {0}")]
    Corrupted(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("restore target {0} is not empty")]
    TargetNotEmpty(String),
}

/// Writes the backup framing around exported pairs, keeping the checksum.
#[derive(Debug)]
pub struct BackupWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    count: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut crc = crc32fast::Hasher::new();
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        crc.update(&header);
        out.write_all(&header)?;
        Ok(BackupWriter { out, crc, count: 0 })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let field =
            |b: &[u8]| u32::try_from(b.len()).map_err(|_| io::Error::other("field over 4 GiB"));
        self.put(&[PAIR])?;
        self.put(&field(key)?.to_be_bytes())?;
        self.put(key)?;
        self.put(&field(value)?.to_be_bytes())?;
        self.put(value)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer; returns the writer and the pair count.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let mut trailer = vec![END];
        trailer.extend_from_slice(&self.count.to_be_bytes());
        self.crc.update(&trailer);
        trailer.extend_from_slice(&self.crc.clone().finalize().to_be_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        Ok((self.out, self.count))
    }
}

/// Reads a whole backup, checking everything; yields its pairs.
pub fn read_backup(mut input: impl Read) -> Result<Vec<Pair>, BackupError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            BackupError::Truncated
        } else {
            BackupError::NotABackup
        });
    }
    let mut at = MAGIC.len();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], BackupError> {
        let slice = bytes.get(*at..*at + n).ok_or(BackupError::Truncated)?;
        *at += n;
        Ok(slice)
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let version = u32_of(take(&mut at, 4)?);
    if version > FORMAT_VERSION {
        return Err(BackupError::NewerFormat(version));
    }
    let mut pairs = Vec::new();
    loop {
        match take(&mut at, 1)?[0] {
            PAIR => {
                let klen = u32_of(take(&mut at, 4)?);
                if klen > MAX_FIELD {
                    return Err(BackupError::Corrupted(format!("key length {klen}")));
                }
                let key = take(&mut at, klen as usize)?.to_vec();
                let vlen = u32_of(take(&mut at, 4)?);
                if vlen > MAX_FIELD {
                    return Err(BackupError::Corrupted(format!("value length {vlen}")));
                }
                let value = take(&mut at, vlen as usize)?.to_vec();
                pairs.push((key, value));
            }
            END => {
                let count = take(&mut at, 8)?;
                let count =
                    u64::from_be_bytes(count.try_into().map_err(|_| BackupError::Truncated)?);
                let body_end = at;
                let stored = u32_of(take(&mut at, 4)?);
                if at != bytes.len() {
                    return Err(BackupError::Corrupted("bytes after the trailer".into()));
                }
                let actual = crc32fast::hash(&bytes[..body_end]);
                if stored != actual {
                    return Err(BackupError::Corrupted(format!(
                        "checksum {actual:08x} does not match the recorded {stored:08x}"
                    )));
                }
                if count != pairs.len() as u64 {
                    return Err(BackupError::Corrupted(format!(
                        "{} pairs, trailer says {count}",
                        pairs.len()
                    )));
                }
                return Ok(pairs);
            }
            other => {
                return Err(BackupError::Corrupted(format!(
                    "unknown record tag {other}"
                )))
            }
        }
    }
}

/// Restores `file` into `data_dir`, which must be empty or absent, through
/// `into` (the data dir's kind of state). The file is checked whole first;
/// if writing fails, what was written is removed.
pub fn restore(file: &Path, data_dir: &Path, into: &dyn Import) -> Result<u64, BackupError> {
    let pairs = read_backup(io::BufReader::new(std::fs::File::open(file)?))?;
    let existed = data_dir.exists();
    if existed && std::fs::read_dir(data_dir)?.next().is_some() {
        return Err(BackupError::TargetNotEmpty(data_dir.display().to_string()));
    }
    let result = into.import(&mut pairs.into_iter());
    match result {
        Ok(count) => Ok(count),
        Err(e) => {
            // Leave nothing half-written behind.
            if existed {
                if let Ok(entries) = std::fs::read_dir(data_dir) {
                    for entry in entries.flatten() {
                        let _ = std::fs::remove_dir_all(entry.path())
                            .or_else(|_| std::fs::remove_file(entry.path()));
                    }
                }
            } else {
                let _ = std::fs::remove_dir_all(data_dir);
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = BackupWriter::new(Vec::new()).unwrap();
        w.pair(b"h/1", b"header").unwrap();
        w.pair(b"e/1", &[7u8; 300]).unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn round_trips() {
        let pairs = read_backup(&sample()[..]).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0], (b"h/1".to_vec(), b"header".to_vec()));
    }

    #[test]
    fn truncated_and_corrupted_files_are_refused() {
        let good = sample();
        for cut in [0, 5, 20, good.len() / 2, good.len() - 1] {
            assert!(read_backup(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[100] ^= 0x55; // inside the 300-byte value
        assert!(matches!(
            read_backup(&flipped[..]),
            Err(BackupError::Corrupted(_))
        ));
        assert!(matches!(
            read_backup(&b"not a backup at all, no"[..]),
            Err(BackupError::NotABackup)
        ));
    }

    #[test]
    fn any_damage_to_a_backup_is_refused_without_a_panic() {
        let good = sample();
        let mut rng = crate::sim::Rng::new(0x0BAC_CAFE);
        let mut next = || rng.next_u64();
        for case in 0..20_000 {
            let mut bad = good.clone();
            match next() % 4 {
                0 => bad.truncate((next() as usize) % good.len()),
                1 => {
                    let at = (next() as usize) % bad.len();
                    bad[at] ^= 1 << (next() % 8);
                }
                2 => {
                    let at = (next() as usize) % bad.len();
                    bad.insert(at, next() as u8);
                }
                _ => {
                    let at = (next() as usize) % bad.len();
                    bad.remove(at);
                }
            }
            assert!(
                read_backup(&bad[..]).is_err(),
                "case {case} was read as whole"
            );
        }
    }
}
