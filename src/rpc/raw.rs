//! Calls to any RPC of the API by its path, with request bytes exactly as
//! given: for the tests and fuzzers that send what no generated client
//! would (over-long fields, wrong wire types, garbage), walking the API
//! from its own descriptors so that an RPC added later is covered too.

use std::collections::HashMap;

use bytes::{Buf, BufMut};
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::client::AuthedChannel;

/// Sends pre-encoded request bytes; ignores what comes back.
#[derive(Clone, Debug, Default)]
pub struct Raw;

#[derive(Debug)]
pub struct RawEncoder;
#[derive(Debug)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// One RPC of the API, as its descriptors give it.
#[derive(Clone, Debug)]
pub struct Method {
    /// `Service.Method`.
    pub name: String,
    pub path: http::uri::PathAndQuery,
    /// The request message's full name.
    pub input: String,
    pub streaming: bool,
}

/// The API as its descriptors give it.
#[derive(Debug)]
pub struct Api {
    /// Every message of the API (and of the files it imports) by full name.
    pub messages: HashMap<String, DescriptorProto>,
    /// Every RPC the server serves (the bench's baseline left out).
    pub methods: Vec<Method>,
}

/// The API, read from the descriptors built into the binary.
pub fn api() -> Api {
    let set = FileDescriptorSet::decode(super::pb::FILE_DESCRIPTOR_SET)
        .expect("the built-in descriptors decode");
    let mut messages = HashMap::new();
    for file in &set.file {
        for m in &file.message_type {
            messages.insert(format!("{}.{}", file.package(), m.name()), m.clone());
        }
    }
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "swarmdesk.v1") {
        for service in file.service.iter().filter(|s| s.name() != "BenchBaseline") {
            for method in &service.method {
                methods.push(Method {
                    name: format!("{}.{}", service.name(), method.name()),
                    path: format!("/swarmdesk.v1.{}/{}", service.name(), method.name())
                        .parse()
                        .expect("a method path is a valid URI path"),
                    input: method.input_type().trim_start_matches('.').to_owned(),
                    streaming: method.server_streaming(),
                });
            }
        }
    }
    Api { messages, methods }
}

/// Sends `body` to `method`; the status if it was refused. What comes
/// back is read and dropped (for a stream, only its first answer).
pub async fn call(channel: &AuthedChannel, method: &Method, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let request = tonic::Request::new(body);
    if method.streaming {
        grpc.server_streaming(request, method.path.clone(), Raw)
            .await
            .map(drop)
    } else {
        grpc.unary(request, method.path.clone(), Raw)
            .await
            .map(drop)
    }
}

/// The bytes a status takes as sent: grpc-message percent-encoded (what
/// is not printable ASCII, and '%', takes 3 bytes), details in base64.
pub fn wire_size(status: &Status) -> usize {
    let message: usize = status
        .message()
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                1
            } else {
                3
            }
        })
        .sum();
    message + status.details().len().div_ceil(3) * 4
}
