//! Encoded answers of one table, reused for the same query from the same source: a hit skips
//! parsing and encoding (the id is patched in). Keyed by the source address (it decides the
//! view) and the query's bytes after its id (flags, question, EDNS: everything the answer
//! depends on); emptied when the table changes and when it is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::table::DnsTable;

/// Entries kept before the cache is emptied (bounds a flood of distinct names).
const MAX_ENTRIES: usize = 8192;

#[derive(Debug, Default)]
pub(crate) struct AnswerCache {
    /// The table the entries were answered from.
    table: Option<Arc<DnsTable>>,
    entries: HashMap<Vec<u8>, Vec<u8>>,
    /// Scratch space for the key of a lookup (no allocation per query).
    key: Vec<u8>,
}

impl AnswerCache {
    /// The answer to `query` from `source` if the same query was answered from `table`,
    /// with the query's id.
    pub(crate) fn get(
        &mut self,
        table: &Arc<DnsTable>,
        source: IpAddr,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        if !self.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, table)) {
            self.entries.clear();
            self.table = Some(Arc::clone(table));
            return false;
        }
        if query.len() < 12 {
            return false;
        }
        self.fill_key(source, query);
        let Some(answer) = self.entries.get(self.key.as_slice()) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(answer);
        out[..2].copy_from_slice(&query[..2]);
        true
    }

    /// Keeps `answer` (to `query` from `source`, answered from the table of the last `get`).
    pub(crate) fn insert(&mut self, source: IpAddr, query: &[u8], answer: &[u8]) {
        if query.len() < 12 || answer.len() < 12 {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.fill_key(source, query);
        self.entries.insert(self.key.clone(), answer.to_vec());
    }

    fn fill_key(&mut self, source: IpAddr, query: &[u8]) {
        self.key.clear();
        let source = match source.to_canonical() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
            IpAddr::V6(ip) => ip,
        };
        self.key.extend_from_slice(&source.octets());
        self.key.extend_from_slice(&query[2..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_need_the_same_table_source_and_question_and_take_the_querys_id() {
        let table = Arc::new(DnsTable::default());
        let mut cache = AnswerCache::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7];
        let mut out = Vec::new();
        assert!(!cache.get(&table, a, &query, &mut out));
        cache.insert(a, &query, &[0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9]);
        let mut again = query;
        again[..2].copy_from_slice(&[0xab, 0xcd]);
        assert!(cache.get(&table, a, &again, &mut out));
        assert_eq!(out, [0xab, 0xcd, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9]);
        assert!(!cache.get(&table, b, &again, &mut out), "another source");
        let mut other = again;
        other[12] = 8;
        assert!(!cache.get(&table, a, &other, &mut out), "another question");
        let changed = Arc::new(DnsTable::default());
        assert!(!cache.get(&changed, a, &again, &mut out), "another table");
    }
}
