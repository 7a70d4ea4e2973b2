//! Error replies a stock client can read: every RPC, with each of its
//! string fields (nested ones too) set to long inputs, answers a small
//! error (under 2 KiB as sent: the percent-encoded message and the
//! base64 details) with a precise code and, for INVALID_ARGUMENT, the field
//! named. Google's grpcio drops a reply whose error metadata passes 8 KiB
//! (16 KiB hard), losing code, field and reason.
//!
//! The requests are built from the API's own descriptors, so an RPC or a
//! field added later is covered without touching this file.

mod common;

use std::collections::HashMap;

use common::*;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::DescriptorProto;
use swarmdesk::rpc::pb;
use swarmdesk::rpc::raw::{api, call, wire_size, Api};
use swarmdesk::sim::Rng;
use tonic::Code;
use tonic_types::StatusExt;

/// The longest error, as sent, that every client reads.
const ERROR_BUDGET: usize = 2 * 1024;

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// One length-delimited field: a string, or an embedded message.
fn field(number: i32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(((number as u64) << 3) | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Every string field reachable from `message` (through embedded messages,
/// two levels deep), as a path of (name, number) and how to encode a value
/// into a request of `message`.
fn string_fields(
    messages: &HashMap<String, DescriptorProto>,
    message: &str,
    depth: usize,
) -> Vec<(String, Vec<i32>)> {
    let mut found = Vec::new();
    let Some(descriptor) = messages.get(message) else {
        return found;
    };
    for f in &descriptor.field {
        let name = if f.label() == Label::Repeated {
            format!("{}[0]", f.name())
        } else {
            f.name().to_owned()
        };
        match f.r#type() {
            Type::String => found.push((name, vec![f.number()])),
            Type::Message if depth > 0 => {
                let inner = f.type_name().trim_start_matches('.');
                if inner.starts_with("google.") {
                    continue;
                }
                for (path, numbers) in string_fields(messages, inner, depth - 1) {
                    let mut all = vec![f.number()];
                    all.extend(numbers);
                    found.push((format!("{name}.{path}"), all));
                }
            }
            _ => {}
        }
    }
    found
}

/// Random text: mostly short, sometimes long, with control characters,
/// quotes, non-ASCII and the separators our ids use.
fn random_text(rng: &mut Rng) -> Vec<u8> {
    const PIECES: [&str; 12] = [
        "a", "Z", "0", "-", ".", ":", "@", "T-", "KB-", "é", "\u{0}", "\"",
    ];
    let len = match rng.below(10) {
        0 => rng.below(3_000),
        _ => rng.below(40),
    };
    let mut text = String::new();
    for _ in 0..len {
        text.push_str(PIECES[rng.below(PIECES.len())]);
    }
    text.into_bytes()
}

/// A request of `message` with each field set or not at random, with a
/// value of its declared type (now and then of another wire type), nested
/// messages two levels deep.
fn random_request(
    rng: &mut Rng,
    messages: &HashMap<String, DescriptorProto>,
    message: &str,
    depth: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(descriptor) = messages.get(message) else {
        return out;
    };
    for f in &descriptor.field {
        let times = match (rng.below(2), f.label() == Label::Repeated) {
            (0, _) => 0,
            (_, true) => 1 + rng.below(3) as u64,
            (_, false) => 1,
        };
        for _ in 0..times {
            let number = f.number() as u64;
            let as_varint = |rng: &mut Rng, out: &mut Vec<u8>| {
                varint(number << 3, out);
                let value = match rng.below(4) {
                    0 => rng.next_u64(),
                    1 => u64::MAX,
                    _ => rng.below(8) as u64,
                };
                varint(value, out);
            };
            if rng.chance(5) {
                // The wrong wire type for the field.
                as_varint(rng, &mut out);
                continue;
            }
            match f.r#type() {
                Type::String | Type::Bytes => {
                    out.extend(field(f.number(), &random_text(rng)));
                }
                Type::Message => {
                    let inner = f.type_name().trim_start_matches('.');
                    let body = if depth == 0 || inner.starts_with("google.") {
                        let mut t = Vec::new();
                        varint(8, &mut t);
                        varint(rng.next_u64() >> 1, &mut t);
                        t
                    } else {
                        random_request(rng, messages, inner, depth - 1)
                    };
                    out.extend(field(f.number(), &body));
                }
                _ => as_varint(rng, &mut out),
            }
        }
    }
    out
}

/// A request whose only set field is the one at `numbers`, holding `value`.
fn request(numbers: &[i32], value: &[u8]) -> Vec<u8> {
    match numbers {
        [] => value.to_vec(),
        [last] => field(*last, value),
        [first, rest @ ..] => field(*first, &request(rest, value)),
    }
}

#[tokio::test]
async fn every_rpc_answers_long_string_inputs_with_a_small_precise_error() {
    let server = spawn_server().await;
    let Api { messages, methods } = api();
    let channel =
        swarmdesk::client::with_token(server.channel.clone(), Some(&server.admin_token)).unwrap();
    let inputs: [(&str, Vec<u8>); 3] = [
        ("5,000 x", "x".repeat(5_000).into_bytes()),
        ("2,000 é", "é".repeat(2_000).into_bytes()),
        // Just under the message cap (1 MiB), leaving room for the framing.
        ("near the cap", "y".repeat(1024 * 1024 - 64).into_bytes()),
    ];
    let mut calls = 0;
    for method in &methods {
        for (name, numbers) in string_fields(&messages, &method.input, 2) {
            for (label, value) in &inputs {
                let what = format!("{} {name} = {label}", method.name);
                let outcome = call(&channel, method, request(&numbers, value)).await;
                calls += 1;
                let Err(status) = outcome else {
                    continue;
                };
                let size = wire_size(&status);
                assert!(
                    size < ERROR_BUDGET,
                    "{what}: a {size}-byte error: {:?}",
                    status.message().chars().take(200).collect::<String>()
                );
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::FailedPrecondition
                            | Code::PermissionDenied
                    ),
                    "{what}: {:?} {}",
                    status.code(),
                    status.message()
                );
                let details = status.get_error_details();
                if status.code() == Code::InvalidArgument {
                    let violations = details
                        .bad_request()
                        .map(|b| b.field_violations.clone())
                        .unwrap_or_default();
                    assert!(
                        violations.iter().any(|v| !v.field.is_empty()),
                        "{what}: no field named: {}",
                        status.message()
                    );
                } else {
                    assert!(details.error_info().is_some(), "{what}: no ErrorInfo");
                }
            }
        }
    }
    assert!(methods.len() >= 30, "only {} methods found", methods.len());
    assert!(calls >= 200, "only {calls} calls made");
}

#[tokio::test]
async fn random_requests_to_every_rpc_never_break_the_server() {
    let server = spawn_server().await;
    let Api { messages, methods } = api();
    let channel =
        swarmdesk::client::with_token(server.channel.clone(), Some(&server.admin_token)).unwrap();
    let mut rng = Rng::new(0x005E_ED0F_5EED);
    let mut answered = 0;
    for method in &methods {
        for case in 0..40 {
            let body = if case % 10 == 9 {
                // Not protobuf at all.
                (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
            } else {
                random_request(&mut rng, &messages, &method.input, 2)
            };
            let what = format!("{} case {case}", method.name);
            let outcome = call(&channel, method, body).await;
            answered += 1;
            let Err(status) = outcome else {
                continue;
            };
            assert!(wire_size(&status) < ERROR_BUDGET, "{what}: {status:?}");
            // Undecodable bytes are INTERNAL by gRPC's own rule;
            // anything else internal is a defect.
            let undecodable = status.message().contains("decode");
            assert!(
                !matches!(status.code(), Code::Unknown | Code::Internal) || undecodable,
                "{what}: {:?} {}",
                status.code(),
                status.message()
            );
        }
    }
    assert!(answered > 1_000, "{answered}");
    // Still up and serving, and still answering correctly.
    let c = Clients::new(connect(server.addr).await, Some(&server.admin_token));
    c.tickets
        .clone()
        .create_ticket(pb::CreateTicketRequest {
            title: "after the noise".into(),
            requester: "cust".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}
