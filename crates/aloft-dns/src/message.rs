//! The wire side of an answer (hickory-proto): a query's bytes in, and either a response's bytes
//! out, the decision to forward the query upstream, or to drop it.

use std::net::IpAddr;
use std::sync::LazyLock;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{AAAA, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::answer::{self, Asker, Outcome, RecordData, TTL};
use crate::names;
use crate::table::DnsTable;

/// Queries longer than this are refused (FORMERR) without being parsed: a real question is a
/// few hundred bytes at most, EDNS options included.
pub(crate) const MAX_QUERY_LEN: usize = 4096;

/// The largest UDP response we send to an EDNS client (the DNS flag day 2020 value, which
/// avoids IP fragmentation); clients without EDNS get 512 bytes.
const EDNS_UDP_PAYLOAD: u16 = 1232;

/// How the query came, which bounds the response size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Send these bytes back: an answer of our zones, which depends only on the table, the
    /// source address and the query's bytes after its id (so it may be cached on those).
    Authoritative(Vec<u8>),
    /// Not our zones: forward the query, as received, upstream.
    Forward,
    /// Not worth an answer: responses (never answer those: loops), fragments shorter than a
    /// header.
    Drop,
}

/// Decides what to answer `query` (raw bytes) from `source`, with `table` the current table.
pub(crate) fn respond(
    query: &[u8],
    source: IpAddr,
    table: &DnsTable,
    transport: Transport,
) -> Reply {
    if query.len() > MAX_QUERY_LEN {
        return error_from_header(query, ResponseCode::FormErr);
    }
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return error_from_header(query, ResponseCode::FormErr),
    };
    if request.message_type() != MessageType::Query {
        return Reply::Drop;
    }
    if request.op_code() != OpCode::Query {
        return Reply::Answer(error(&request, ResponseCode::NotImp));
    }
    let [question] = request.queries() else {
        return Reply::Answer(error(&request, ResponseCode::FormErr));
    };
    let lower = question.name().to_lowercase();
    // A label that is no UTF-8 matches no app, region or id of ours (lossy: never equal).
    let labels: Vec<std::borrow::Cow<'_, str>> =
        lower.iter().map(String::from_utf8_lossy).collect();
    let labels: Vec<&str> = labels.iter().map(|label| label.as_ref()).collect();
    let asker = Asker::of_source(table, source);
    let outcome = answer::resolve(table, &asker, &labels, question.query_type());
    let records = match outcome {
        Outcome::NotOurs => return Reply::Forward,
        _ if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) => {
            return Reply::Answer(error(&request, ResponseCode::Refused));
        }
        Outcome::NxDomain => None,
        Outcome::Records(records) => Some(records),
    };
    let zone = labels.last().copied().unwrap_or_default();
    Reply::Authoritative(authoritative(&request, question, zone, records, transport))
}

/// A SERVFAIL for `query` (forwarding failed or was not possible); `None` if the query cannot
/// be read (it was read once before forwarding, so only for bytes that changed meaning).
pub(crate) fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    Some(error(&request, ResponseCode::ServFail))
}

/// The response to a question of our zones: `records` None is NXDOMAIN, empty is NODATA (both
/// with the zone's SOA, for negative caching of at most [`TTL`] seconds).
fn authoritative(
    request: &Message,
    question: &Query,
    zone: &str,
    records: Option<Vec<RecordData>>,
    transport: Transport,
) -> Vec<u8> {
    let mut response = response_to(request);
    response.set_authoritative(true);
    match records {
        None => {
            response.set_response_code(ResponseCode::NXDomain);
            response.add_name_server(soa(zone));
        }
        Some(records) if records.is_empty() => {
            response.add_name_server(soa(zone));
        }
        Some(records) => {
            for data in records {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    rdata(data),
                ));
            }
        }
    }
    encode_within(response, size_limit(request, transport))
}

fn rdata(data: RecordData) -> RData {
    match data {
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(ip)),
        RecordData::Txt(text) => RData::TXT(TXT::new(character_strings(&text))),
    }
}

/// Splits a text into DNS character-strings of at most 255 bytes (on char boundaries).
fn character_strings(text: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > 255 {
            strings.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    strings.push(current);
    strings
}

static INTERNAL_SOA: LazyLock<Record> = LazyLock::new(|| soa_record(names::INTERNAL));
static FLYCAST_SOA: LazyLock<Record> = LazyLock::new(|| soa_record(names::FLYCAST));

fn soa(zone: &str) -> Record {
    if zone == names::FLYCAST {
        FLYCAST_SOA.clone()
    } else {
        INTERNAL_SOA.clone()
    }
}

fn soa_record(zone: &str) -> Record {
    let name = |n: &str| Name::from_ascii(n).expect("a constant, valid name");
    let soa = SOA::new(
        name(&format!("ns.{zone}.")),
        name(&format!("hostmaster.{zone}.")),
        1,
        TTL as i32,
        TTL as i32,
        TTL as i32,
        TTL,
    );
    Record::from_rdata(name(&format!("{zone}.")), TTL, RData::SOA(soa))
}

/// A response skeleton: id, question, flags (we offer recursion: other names are forwarded),
/// EDNS when the request had it.
fn response_to(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(request.checking_disabled());
    response.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

fn error(request: &Message, code: ResponseCode) -> Vec<u8> {
    let mut response = response_to(request);
    if request.queries().len() > 1 {
        // A FORMERR for many questions need not echo them.
        response.take_queries();
    }
    response.set_response_code(code);
    encode_within(response, usize::from(u16::MAX))
}

/// An error for bytes that are no message: answered only if at least the header is a query's.
fn error_from_header(query: &[u8], code: ResponseCode) -> Reply {
    match Header::read(&mut BinDecoder::new(query)) {
        Ok(header) if header.message_type() == MessageType::Query => Reply::Answer(encode_within(
            Message::error_msg(header.id(), header.op_code(), code),
            usize::from(u16::MAX),
        )),
        _ => Reply::Drop,
    }
}

/// UDP: 512 bytes, or what the client's EDNS offers up to [`EDNS_UDP_PAYLOAD`]. TCP: 64 KiB.
fn size_limit(request: &Message, transport: Transport) -> usize {
    match (transport, request.extensions()) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(edns)) => {
            usize::from(edns.max_payload().clamp(512, EDNS_UDP_PAYLOAD))
        }
    }
}

/// Encodes `response`; if it does not fit in `limit` bytes, sends it truncated (TC set, no
/// records) so the client retries over TCP.
fn encode_within(mut response: Message, limit: usize) -> Vec<u8> {
    let too_long = match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return bytes,
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "could not encode a DNS response; sending SERVFAIL");
            false
        }
    };
    response.take_answers();
    response.take_name_servers();
    response.take_additionals();
    if too_long {
        response.set_truncated(true);
    } else {
        response.set_response_code(ResponseCode::ServFail);
    }
    response.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_become_several_character_strings() {
        let text = "x".repeat(600);
        let strings = character_strings(&text);
        assert_eq!(
            strings.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(strings.concat(), text);
    }
}
