//! Readers that page through one tenant's data while it is being written
//! to. Each stops at what existed when it was opened: under steady writes a
//! reader that went to the end kept pace with the writers (new ids and chain
//! entries sort last), a few rows per page, and a move or export never ended.

use super::JobResult;
use std::collections::VecDeque;
use tenantry::RecordId;
use tenantry::audit::{AuditEntry, AuditFilter};
use tenantry::record::Record;
use tenantry::store::TenantData;

/// Rows per page.
pub const PAGE: u32 = 1000;

/// A data chain's entries after a seq, a page at a time, up to its head
/// when opened.
pub struct ChainTail<'a> {
    data: &'a dyn TenantData,
    /// The last entry read.
    pub at: i64,
    until: i64,
}

impl<'a> ChainTail<'a> {
    pub async fn open(data: &'a dyn TenantData, after: i64) -> JobResult<Self> {
        let until = data.audit_head().await?.map_or(after, |(seq, _)| seq);
        Ok(Self {
            data,
            at: after,
            until,
        })
    }

    pub async fn next(&mut self) -> JobResult<Option<Vec<(i64, AuditEntry)>>> {
        if self.at >= self.until {
            return Ok(None);
        }
        let mut page = self
            .data
            .list_audit(&AuditFilter::default(), self.at, PAGE)
            .await?;
        page.retain(|(seq, _)| *seq <= self.until);
        let Some((last, _)) = page.last() else {
            self.at = self.until;
            return Ok(None);
        };
        self.at = *last;
        Ok(Some(page))
    }
}

/// One collection's records in id order, a page at a time, up to its
/// largest id when opened. (Within one collection the order is the uuids'
/// bytes on both engines; across collections it is the database's
/// collation, which Rust cannot mirror.)
pub struct Records<'a> {
    data: &'a dyn TenantData,
    collection: &'a str,
    after: RecordId,
    last: Option<RecordId>,
    page: VecDeque<Record>,
    ended: bool,
}

impl<'a> Records<'a> {
    pub async fn open(data: &'a dyn TenantData, collection: &'a str) -> JobResult<Self> {
        let last = data.last_record_id(collection).await?;
        Ok(Self {
            data,
            collection,
            after: RecordId(uuid::Uuid::nil()),
            ended: last.is_none(),
            last,
            page: Default::default(),
        })
    }

    pub async fn peek(&mut self) -> JobResult<Option<&Record>> {
        if self.page.is_empty() && !self.ended {
            let key = (self.collection.to_owned(), self.after);
            let rows = self.data.scan_records(Some(&key), PAGE).await?;
            self.page = rows
                .into_iter()
                .take_while(|(c, r)| c == self.collection && self.last.is_some_and(|l| r.id <= l))
                .map(|(_, r)| r)
                .collect();
            // A short page: the collection (or its bound, or the table)
            // ended in it.
            self.ended = self.page.len() < PAGE as usize;
            if let Some(last) = self.page.back() {
                self.after = last.id;
            }
            tokio::task::yield_now().await;
        }
        Ok(self.page.front())
    }

    pub async fn next(&mut self) -> JobResult<Option<Record>> {
        self.peek().await?;
        Ok(self.page.pop_front())
    }
}
