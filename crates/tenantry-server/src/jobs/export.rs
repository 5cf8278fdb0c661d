//! Export: everything one tenant owns, streamed page by page to a file in
//! the data dir (`exports/<tenant>/<job>.ndjson|json`), in constant memory.
//! The header is written first with room to spare and rewritten in place
//! with the counts at the end; the file is written as `.part` and renamed
//! once complete, so a download never sees half a file. A resumed run
//! starts the file over: an export only reads.
//!
//! Every item is read through the tenant's own handles (its control-store
//! rows by its resolved `Tenant`, its data through `DataPlane::handle`), so
//! nothing of another tenant can reach the file. An export of a tenant
//! being written to is not a snapshot of one instant: suspend it first for one.

use super::pages::{ChainTail, PAGE, Records};
use super::{JobError, JobResult, Run};
use crate::control::tenants::jobs::ExportFormat;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tenantry::audit::AuditFilter;
use tenantry::portable::{self, DataType, Header, Item};
use tenantry::store::{PageRequest, TenantData};
use tenantry::{JobId, Tenant};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

#[derive(Deserialize)]
struct Params {
    data_types: Vec<DataType>,
    #[serde(default)]
    format: ExportFormat,
}

/// Where the result of an export job is downloaded.
pub fn result_url(job: JobId) -> String {
    format!("/api/v1/jobs/{job}/result")
}

pub async fn run(run: &mut Run<'_>) -> JobResult<Option<String>> {
    let p: Params = run.params()?;
    let s = run.services;
    let tenant = s
        .core
        .store
        .tenant_by_id(run.job.tenant_id)
        .await?
        .ok_or_else(|| JobError::Fatal("the tenant no longer exists".into()))?;
    let path = s
        .tenants
        .jobs
        .export_path(tenant.id, run.job.id, p.format.extension());
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let part = PathBuf::from(format!("{}.part", path.display()));
    let data = s.core.data.handle(&tenant).await?;
    let usage = data.usage().await?;
    let exported_at = run.services.core.clock.now();
    let mut out = Writer::create(&part, p.format, &tenant, &p.data_types, exported_at).await?;
    // The records dominate: progress follows them.
    let total = usage.records.max(1) as f64;
    let wants = |t: DataType| p.data_types.contains(&t);
    let id = tenant.id;

    if wants(DataType::Tenant) {
        out.item(&Item::Tenant(portable::TenantItem {
            tenant_id: id,
            slug: tenant.slug.to_string(),
            name: tenant.name.clone(),
            plan: tenant.plan.clone(),
            isolation: tenant.isolation,
            organization_id: tenant.organization_id,
            domain: tenant.domain.clone(),
            metadata: tenant.metadata.clone(),
            branding: tenant.branding.clone(),
            created_at: tenant.created_at,
            updated_at: tenant.updated_at,
        }))
        .await?;
    }
    if wants(DataType::Config) {
        let wrapped = s.core.store.tenant_wrapped_key(&tenant).await?;
        out.item(&Item::Key(portable::KeyItem {
            tenant_id: id,
            wrapped_key: base64::engine::general_purpose::STANDARD.encode(wrapped),
        }))
        .await?;
        for entry in s.core.store.list_config(&tenant).await? {
            out.item(&Item::Config(portable::ConfigItem::new(id, &entry)))
                .await?;
        }
    }
    if wants(DataType::Users) {
        let mut page = PageRequest {
            after: None,
            limit: PAGE,
        };
        loop {
            let users = s.core.store.list_users(&tenant, &page).await?;
            for u in &users {
                out.item(&Item::User(portable::UserItem::new(id, u)))
                    .await?;
            }
            match users.last() {
                Some(last) if users.len() == PAGE as usize => page.after = Some(last.id.0),
                _ => break,
            }
        }
    }
    if wants(DataType::Collections) {
        for def in data.collections().await? {
            out.item(&Item::Collection(portable::CollectionItem::new(id, &def)))
                .await?;
        }
    }
    if wants(DataType::Records) {
        // Each collection up to its largest id when its turn comes: records
        // created after that are not waited for (a busy tenant's export
        // would otherwise never end).
        let mut done = 0u64;
        for def in data.collections().await? {
            let mut records = Records::open(data.as_ref(), &def.name).await?;
            while let Some(r) = records.next().await? {
                out.item(&Item::Record(portable::RecordItem::new(id, &def.name, &r)))
                    .await?;
                done += 1;
                if done.is_multiple_of(PAGE as u64) {
                    run.set_progress(0.9 * done as f64 / total);
                }
            }
        }
    }
    if wants(DataType::Usage) {
        let today = s.core.clock.now().date_naive();
        let from = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(today);
        // Counted but not flushed yet, as the usage report shows them.
        let mut days: BTreeMap<chrono::NaiveDate, u64> = s
            .core
            .store
            .request_counts(&tenant, from, today)
            .await?
            .into_iter()
            .collect();
        for (day, n) in s.admission.daily_quota.pending(tenant.id) {
            *days.entry(day).or_default() += n;
        }
        for (date, requests) in days {
            out.item(&Item::RequestCount(portable::RequestCountItem {
                tenant_id: id,
                date,
                requests,
            }))
            .await?;
        }
        out.item(&Item::Usage(portable::UsageItem {
            tenant_id: id,
            records: usage.records,
            storage_bytes: usage.storage_bytes,
        }))
        .await?;
    }
    if wants(DataType::Audit) {
        let mut after = 0;
        loop {
            let page = s
                .core
                .store
                .list_audit(Some(&tenant), &AuditFilter::default(), after, PAGE)
                .await?;
            for (seq, e) in &page {
                out.item(&Item::Audit(portable::AuditItem::new(id, *seq, e)))
                    .await?;
            }
            match page.last() {
                Some((seq, _)) => after = *seq,
                None => break,
            }
        }
        export_data_chain(&mut out, data.as_ref(), &tenant).await?;
    }
    out.finish().await?;
    tokio::fs::rename(&part, &path).await?;
    Ok(Some(result_url(run.job.id)))
}

async fn export_data_chain(out: &mut Writer, data: &dyn TenantData, t: &Tenant) -> JobResult<()> {
    // Up to the head as the chain's turn comes: after the records, so it
    // names every change they show.
    let mut chain = ChainTail::open(data, 0).await?;
    while let Some(page) = chain.next().await? {
        for (seq, e) in &page {
            out.item(&Item::Audit(portable::AuditItem::new(t.id, *seq, e)))
                .await?;
        }
    }
    Ok(())
}

/// The file as it is written: NDJSON (a header line, an item per line) or
/// one JSON document laid out one item per line, so both read back line by
/// line: `{"header":<header>,` / `"items":[` / `<item>,` … / `<item>` / `]}`.
struct Writer {
    out: BufWriter<tokio::fs::File>,
    format: ExportFormat,
    header: Header,
    written: u64,
}

impl Writer {
    async fn create(
        path: &std::path::Path,
        format: ExportFormat,
        tenant: &Tenant,
        data_types: &[DataType],
        exported_at: chrono::DateTime<chrono::Utc>,
    ) -> JobResult<Self> {
        let file = tokio::fs::File::create(path).await?;
        let header = Header {
            format: portable::FORMAT.to_owned(),
            version: portable::VERSION,
            tenant_id: tenant.id,
            slug: tenant.slug.to_string(),
            exported_at,
            data_types: data_types.to_vec(),
            counts: BTreeMap::new(),
        };
        let mut w = Self {
            out: BufWriter::with_capacity(256 * 1024, file),
            format,
            header,
            written: 0,
        };
        // A placeholder of the final header's width, overwritten at the end.
        w.out.write_all(&w.header_bytes()?).await?;
        if format == ExportFormat::Json {
            w.out.write_all(b"\"items\":[\n").await?;
        }
        Ok(w)
    }

    fn header_bytes(&self) -> JobResult<Vec<u8>> {
        let mut line = portable::header_line(&self.header).map_err(JobError::Fatal)?;
        if self.format == ExportFormat::Json {
            // `{"header":` + header + `,` in the same reserved width.
            let prefix = b"{\"header\":";
            let mut json = prefix.to_vec();
            json.extend_from_slice(line.trim_ascii_end());
            json.push(b',');
            if json.len() + 1 > portable::HEADER_BYTES {
                return Err(JobError::Fatal("the export header is too large".into()));
            }
            json.resize(portable::HEADER_BYTES - 1, b' ');
            json.push(b'\n');
            line = json;
        }
        Ok(line)
    }

    async fn item(&mut self, item: &Item) -> JobResult<()> {
        if self.format == ExportFormat::Json && self.written > 0 {
            self.out.write_all(b",\n").await?;
        }
        let line = serde_json::to_vec(item).map_err(|e| JobError::Fatal(e.to_string()))?;
        self.out.write_all(&line).await?;
        if self.format == ExportFormat::Ndjson {
            self.out.write_all(b"\n").await?;
        }
        *self
            .header
            .counts
            .entry(item.kind().to_owned())
            .or_default() += 1;
        self.written += 1;
        Ok(())
    }

    /// Closes the document, writes the real header over the placeholder and
    /// makes the file durable.
    async fn finish(mut self) -> JobResult<()> {
        if self.format == ExportFormat::Json {
            self.out.write_all(b"\n]}\n").await?;
        }
        self.out.flush().await?;
        let header = self.header_bytes()?;
        let mut file = self.out.into_inner();
        file.seek(std::io::SeekFrom::Start(0)).await?;
        file.write_all(&header).await?;
        file.sync_all().await?;
        Ok(())
    }
}
