//! The import's first pass: the whole file checked, nothing written — the
//! header, every line, the announced counts, the size, and that encrypted
//! config opens with the file's key here.

use crate::jobs::{JobError, Run};
use base64::Engine;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use tenantry::audit::AuditChain;
use tenantry::portable::{self, Header, Item, LineError};
use tenantry::record::valid_collection_name;
use tenantry::{Role, UserId};
use tokio::io::AsyncBufReadExt;

/// What the check found: the header, the key, the restored fields, and
/// what phase 1 would write (to undo it).
pub(super) struct Summary {
    pub(super) header: Header,
    /// The exporting platform's wrapped data key of the file's tenant.
    pub(super) key: Option<Vec<u8>>,
    pub(super) tenant: Option<portable::TenantItem>,
    pub(super) users: Vec<UserId>,
    pub(super) config_keys: Vec<String>,
    pub(super) lines: u64,
}

pub(super) enum Checked {
    Line(LineError),
    Job(JobError),
}

impl From<LineError> for Checked {
    fn from(e: LineError) -> Self {
        Checked::Line(e)
    }
}

impl From<std::io::Error> for Checked {
    fn from(e: std::io::Error) -> Self {
        Checked::Job(e.into())
    }
}

/// The file, line by line: NDJSON, or the JSON layout exports are written in.
pub(super) struct Lines {
    inner: tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>,
    json: bool,
    no: u64,
    ended: bool,
}

impl Lines {
    pub(super) async fn open(path: &Path) -> Result<(Self, Header), Checked> {
        let file = tokio::fs::File::open(path).await?;
        let mut lines = Self {
            inner: tokio::io::BufReader::with_capacity(256 * 1024, file).lines(),
            json: false,
            no: 0,
            ended: false,
        };
        let first = lines
            .inner
            .next_line()
            .await?
            .ok_or_else(|| LineError::new(1, "the file is empty"))?;
        lines.no = 1;
        let first = first.trim();
        let header_text = match first.strip_prefix("{\"header\":") {
            Some(rest) => {
                lines.json = true;
                rest.strip_suffix(',')
                    .ok_or_else(|| LineError::new(1, "a JSON export's first line ends with `,`"))?
            }
            None => first,
        };
        let header = portable::parse_header(header_text)?;
        if lines.json {
            let second = lines.inner.next_line().await?.unwrap_or_default();
            lines.no = 2;
            if second.trim() != "\"items\":[" {
                return Err(LineError::new(2, "expected `\"items\":[`").into());
            }
        }
        Ok((lines, header))
    }

    /// The next item line's number and text, without separators.
    pub(super) async fn next(&mut self) -> Result<Option<(u64, String)>, Checked> {
        while let Some(line) = self.inner.next_line().await? {
            self.no += 1;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if self.ended {
                return Err(LineError::new(self.no, "text after the end of the document").into());
            }
            if self.json {
                if text == "]}" {
                    self.ended = true;
                    continue;
                }
                return Ok(Some((self.no, text.trim_end_matches(',').to_owned())));
            }
            return Ok(Some((self.no, text.to_owned())));
        }
        if self.json && !self.ended {
            return Err(LineError::new(self.no, "the JSON document is cut short (no `]}`)").into());
        }
        Ok(None)
    }
}

/// The first pass: every line checked, nothing written.
pub(super) async fn check_file(run: &Run<'_>, path: &Path) -> Result<Summary, Checked> {
    let s = run.services;
    let size = tokio::fs::metadata(path).await?.len();
    if size > s.tenants.jobs.import_max_bytes {
        return Err(Checked::Job(JobError::Fatal(format!(
            "the import file is {size} bytes, over the limit of {} (import_max_bytes)",
            s.tenants.jobs.import_max_bytes
        ))));
    }
    let (mut lines, header) = Lines::open(path).await?;
    let source = header.tenant_id;
    let mut summary = Summary {
        header,
        key: None,
        tenant: None,
        users: Vec::new(),
        config_keys: Vec::new(),
        lines: 0,
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut emails = HashSet::new();
    let mut collections = HashSet::new();
    while let Some((no, text)) = lines.next().await? {
        let item = portable::parse_item(no, &text, source)?;
        let bad = |m: String| LineError::new(no, m);
        match &item {
            Item::Tenant(t) => {
                if summary.tenant.replace(t.clone()).is_some() {
                    return Err(bad("a second tenant item".into()).into());
                }
            }
            Item::Key(k) => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(&k.wrapped_key)
                    .map_err(|e| bad(format!("wrapped_key is not base64: {e}")))?;
                if summary.key.replace(key).is_some() {
                    return Err(bad("a second key item".into()).into());
                }
            }
            Item::Config(c) => {
                if c.encrypted {
                    let key = summary.key.as_deref().ok_or_else(|| {
                        bad("an encrypted value, but no key item before it".into())
                    })?;
                    let sealed = c
                        .value
                        .as_str()
                        .ok_or_else(|| bad("an encrypted value must be its sealed text".into()))?;
                    s.core.keyring
                        .open_value(source, key, &c.key, sealed)
                        .map_err(|_| {
                            bad(format!(
                                "the encrypted value of `{}` does not open with this platform's master key (exported elsewhere?)",
                                c.key
                            ))
                        })?;
                }
                summary.config_keys.push(c.key.clone());
            }
            Item::User(u) => {
                if !matches!(u.role, Role::Admin | Role::Manager | Role::User) {
                    return Err(bad(format!("role {:?} is not a tenant role", u.role)).into());
                }
                if let Some(email) = &u.email
                    && !emails.insert(email.to_lowercase())
                {
                    return Err(bad(format!("a second user with email {email}")).into());
                }
                summary.users.push(u.id);
            }
            Item::Collection(c) => {
                if !valid_collection_name(&c.name) {
                    return Err(bad(format!("`{}` is not a collection name", c.name)).into());
                }
                collections.insert(c.name.clone());
            }
            Item::Record(r) => {
                if !valid_collection_name(&r.collection) {
                    return Err(bad(format!("`{}` is not a collection name", r.collection)).into());
                }
                if !r.data.is_object() {
                    return Err(bad("a record's data is a JSON object".into()).into());
                }
                if !collections.contains(&r.collection) {
                    return Err(bad(format!(
                        "a record of `{}`, which no collection item before it defines",
                        r.collection
                    ))
                    .into());
                }
            }
            Item::Audit(a) => {
                if a.chain == AuditChain::Platform {
                    return Err(bad("platform audit entries belong to no tenant".into()).into());
                }
            }
            Item::RequestCount(_) | Item::Usage(_) => {}
        }
        *counts.entry(item.kind().to_owned()).or_default() += 1;
        summary.lines += 1;
    }
    if counts != summary.header.counts {
        return Err(LineError::new(
            1,
            format!(
                "the header counts {:?}, the file holds {counts:?} (a truncated or edited file?)",
                summary.header.counts
            ),
        )
        .into());
    }
    Ok(summary)
}
