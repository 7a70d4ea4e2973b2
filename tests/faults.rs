//! A full disk, on a small tmpfs this test mounts for itself (skipped, with
//! the reason printed, where the machine does not allow mounting): writes
//! are refused with RESOURCE_EXHAUSTED `DISK_FULL` naming the data dir,
//! reads go on, health turns NOT_SERVING; once space is freed the server
//! stops in order with its restart status, and started again it has every
//! acknowledged ticket and takes writes. SIGTERM on a full disk ends it.
//!
//! A disk that fails every I/O (an ext4 image on a loop device, shut down
//! with `FS_IOC_SHUTDOWN`, as a dying disk or a yanked volume is): writes
//! are refused with UNAVAILABLE `DATA_DIR_UNWRITABLE`, reads go on from
//! memory, health turns NOT_SERVING, SIGTERM ends the server, and what was
//! acknowledged is there once the volume is back. A data dir on a
//! read-only volume is refused at start, naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::*;
use common::*;
use swarmdesk::rpc::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, with the reason printed, where mounting is not allowed.
    fn mount(mib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::piped())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { path, _dir: dir }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount here ({e})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// An ext4 volume on a loop device whose image lives on its own tmpfs
/// (never the machine's disk); unmounted and detached when dropped.
struct Ext4 {
    image: PathBuf,
    device: String,
    path: PathBuf,
    _tmpfs: Tmpfs,
}

impl Ext4 {
    /// `None`, with the reason printed, where loop devices are not allowed.
    fn mount() -> Option<Ext4> {
        let tmpfs = Tmpfs::mount(80)?;
        let image = tmpfs.path.join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let attached = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .stderr(Stdio::piped())
            .output();
        let device = match attached {
            Ok(out) if out.status.success() => {
                String::from_utf8(out.stdout).unwrap().trim().to_owned()
            }
            Ok(out) => {
                eprintln!(
                    "SKIPPED: no loop device here ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run losetup here ({e})");
                return None;
            }
        };
        let path = tmpfs.path.join("mnt");
        std::fs::create_dir(&path).unwrap();
        let disk = Ext4 {
            image,
            device,
            path,
            _tmpfs: tmpfs,
        };
        let made = Command::new("mkfs.ext4")
            .args(["-q", &disk.device])
            .status()
            .map(|s| s.success());
        if !matches!(made, Ok(true)) {
            eprintln!("SKIPPED: mkfs.ext4 failed or is missing ({made:?})");
            return None;
        }
        disk.remount(&[]).then_some(disk)
    }

    /// Mounts the volume (again), with `options` such as `ro`.
    fn remount(&self, options: &[&str]) -> bool {
        let _ = Command::new("umount").arg(&self.path).status();
        let mut mount = Command::new("mount");
        if !options.is_empty() {
            mount.args(["-o", &options.join(",")]);
        }
        let status = mount.arg(&self.device).arg(&self.path).status();
        match status {
            Ok(s) if s.success() => true,
            other => {
                eprintln!("SKIPPED: cannot mount {} here ({other:?})", self.device);
                false
            }
        }
    }

    /// Every I/O on the volume fails from now on (EIO), as on a dead
    /// disk: ext4's `FS_IOC_SHUTDOWN`, without flushing the journal.
    /// Done through Python's `fcntl`, since this crate forbids `unsafe`.
    fn fail(&self) -> bool {
        let script = "import fcntl,os,struct,sys\n\
            fd=os.open(sys.argv[1],os.O_RDONLY)\n\
            fcntl.ioctl(fd,(2<<30)|(4<<16)|(ord('X')<<8)|125,struct.pack('I',2))\n";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&self.path)
            .status();
        match status {
            Ok(s) if s.success() => true,
            other => {
                eprintln!("SKIPPED: cannot shut the volume down here ({other:?})");
                false
            }
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A small ticket titled `title`.
fn plain(title: impl Into<String>) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        title: title.into(),
        requester: "cust".into(),
        ..Default::default()
    }
}

/// Takes `mib` MiB of the tmpfs, to be given back later.
fn fill(dir: &Path, mib: usize) -> PathBuf {
    let path = dir.join("filler");
    std::fs::write(&path, vec![7u8; mib * 1024 * 1024]).unwrap();
    path
}

fn ticket(n: usize) -> pb::CreateTicketRequest {
    pb::CreateTicketRequest {
        title: format!("ticket {n}"),
        description: "d".repeat(60 * 1024),
        requester: "cust".into(),
        request_id: format!("fill-{n}"),
        ..Default::default()
    }
}

async fn health(addr: std::net::SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// Creates tickets until the disk is full; returns the ids of those
/// acknowledged, and the refusal.
async fn create_until_full(server: &Process, data_dir: &Path) -> (Vec<String>, tonic::Status) {
    let c = Clients::new(connect(server.addr).await, Some(&admin_token(data_dir)));
    let mut acknowledged = Vec::new();
    for n in 0..1_000 {
        match c.tickets.clone().create_ticket(ticket(n)).await {
            Ok(reply) => acknowledged.push(reply.into_inner().ticket.unwrap().id),
            Err(status) => return (acknowledged, status),
        }
    }
    panic!("the disk never filled");
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_by_restart() {
    let Some(disk) = Tmpfs::mount(12) else {
        return;
    };
    let data_dir = disk.path.join("data");
    let filler = fill(&disk.path, 3);
    let mut server = start(&data_dir);
    let (acknowledged, refused) = create_until_full(&server, &data_dir).await;
    assert!(!acknowledged.is_empty(), "nothing fitted: {refused:?}");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "DISK_FULL");
    assert_eq!(
        info.metadata.get("data_dir"),
        Some(&data_dir.display().to_string())
    );
    assert!(refused.message().contains(&data_dir.display().to_string()));

    // Reads go on; health says NOT_SERVING while writes cannot be stored.
    let c = Clients::new(
        connect_when_up(server.addr).await,
        Some(&admin_token(&data_dir)),
    );
    reads_go_on_while_not_serving(&c, server.addr, &acknowledged[0], "ticket 0").await;
    // Alive, though: a liveness probe does not restart it.
    let channel = connect_when_up(server.addr).await;
    let alive = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: swarmdesk::server::LIVENESS_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(alive, ServingStatus::Serving as i32);

    // Space is freed: the server stops in order, asking to be restarted.
    std::fs::remove_file(&filler).unwrap();
    let exit = wait_exit(&mut server.child).await;
    assert_eq!(exit.code(), Some(75), "{exit:?}");

    // Started again: every acknowledged ticket is there, writes resume.
    let server = start(&data_dir);
    let c = Clients::new(connect(server.addr).await, Some(&admin_token(&data_dir)));
    all_there(&c, &acknowledged).await;
    c.tickets
        .clone()
        .create_ticket(plain("after"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_on_a_full_disk_ends_the_server() {
    let Some(disk) = Tmpfs::mount(12) else {
        return;
    };
    let data_dir = disk.path.join("data");
    let _filler = fill(&disk.path, 3);
    let mut server = start_with(&data_dir, |command| {
        command
            .args(["--shutdown-grace", "2"])
            .env("SWARMDESK_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
    });
    let (_, refused) = create_until_full(&server, &data_dir).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    sigterm(&server.child);
    // wait_exit fails the test if the process hangs (sled's final flush
    // on a full disk never returned, before).
    let exit = wait_exit(&mut server.child).await;
    assert!(exit.code().is_some(), "{exit:?}");
}

#[tokio::test]
async fn a_disk_that_fails_every_io_refuses_writes_keeps_reads_and_stops_on_sigterm() {
    let Some(disk) = Ext4::mount() else {
        return;
    };
    let data_dir = disk.path.join("data");
    let mut server = start_with(&data_dir, |command| {
        command
            .args(["--shutdown-grace", "2"])
            .env("SWARMDESK_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
    });
    let c = Clients::new(connect(server.addr).await, Some(&admin_token(&data_dir)));
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let reply = c
            .tickets
            .clone()
            .create_ticket(pb::CreateTicketRequest {
                title: format!("before {n}"),
                requester: "cust".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        acknowledged.push(reply.into_inner().ticket.unwrap().id);
    }
    if !disk.fail() {
        return;
    }

    let refused = c
        .tickets
        .clone()
        .create_ticket(pb::CreateTicketRequest {
            title: "after the disk died".into(),
            requester: "cust".into(),
            request_id: "dead-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "DATA_DIR_UNWRITABLE", "{refused:?}");
    assert_eq!(
        info.metadata.get("data_dir"),
        Some(&data_dir.display().to_string())
    );
    // And every write after it, also one that would touch no ticket.
    let again = c
        .tickets
        .clone()
        .create_ticket(plain("again"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");

    // Reads go on from what the server holds in memory.
    reads_go_on_while_not_serving(&c, server.addr, &acknowledged[0], "before 0").await;

    sigterm(&server.child);
    let exit = wait_exit(&mut server.child).await;
    assert!(exit.code().is_some(), "{exit:?}");

    // The volume back (its journal replayed at mount): every acknowledged
    // ticket is there, the refused one is not, and writes resume.
    if !disk.remount(&[]) {
        return;
    }
    let server = start(&data_dir);
    let c = Clients::new(connect(server.addr).await, Some(&admin_token(&data_dir)));
    all_there(&c, &acknowledged).await;
    let listed = c
        .tickets
        .clone()
        .list_tickets(pb::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tickets.len(), acknowledged.len(), "{listed:?}");
    c.tickets
        .clone()
        .create_ticket(plain("after"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_data_dir_on_a_read_only_volume_is_refused_at_start_naming_it() {
    let Some(disk) = Ext4::mount() else {
        return;
    };
    let data_dir = disk.path.join("data");
    // A store made while the volume was writable, then the volume read-only.
    let server = start(&data_dir);
    let c = Clients::new(connect(server.addr).await, Some(&admin_token(&data_dir)));
    c.tickets
        .clone()
        .create_ticket(plain("made"))
        .await
        .unwrap();
    sigterm(&server.child);
    let mut server = server;
    wait_exit(&mut server.child).await;
    if !disk.remount(&["ro"]) {
        return;
    }
    let output = Command::new(binary())
        .args(["serve", "--listen", &free_port().to_string(), "--data-dir"])
        .arg(&data_dir)
        .env("SWARMDESK_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(&data_dir.display().to_string()), "{said}");
    assert!(said.to_lowercase().contains("read-only"), "{said}");
}

/// Reads go on (the ticket `id`, titled `title`), and health turns
/// NOT_SERVING while writes cannot be stored.
async fn reads_go_on_while_not_serving(
    c: &Clients,
    addr: std::net::SocketAddr,
    id: &str,
    title: &str,
) {
    let read = c
        .tickets
        .clone()
        .get_ticket(pb::GetTicketRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.title, title);
    let mut status = None;
    for _ in 0..400 {
        status = health(addr).await;
        if status == Some(ServingStatus::NotServing as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(ServingStatus::NotServing as i32));
}

/// Every acknowledged ticket can be read.
async fn all_there(c: &Clients, acknowledged: &[String]) {
    for id in acknowledged {
        c.tickets
            .clone()
            .get_ticket(pb::GetTicketRequest { id: id.clone() })
            .await
            .unwrap_or_else(|e| panic!("acknowledged {id} lost: {e:?}"));
    }
}

/// A channel once the server answers at all (health may be NOT_SERVING).
async fn connect_when_up(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}
