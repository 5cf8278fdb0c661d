//! The tenant export format: everything one tenant owns, as a header and one
//! item per line (NDJSON), or the same header and items in one JSON document.
//!
//! ```text
//! {"format":"tenantry-export","version":1,"tenant_id":"…","counts":{…},…}   ← padded header line
//! {"type":"tenant","tenant_id":"…","name":"…",…}
//! {"type":"key","tenant_id":"…","wrapped_key":"<base64>"}
//! {"type":"config","tenant_id":"…","key":"sms.api_key","value":"<sealed>","encrypted":true,…}
//! {"type":"user","tenant_id":"…","id":"…","password_hash":"$argon2id$…",…}
//! {"type":"collection","tenant_id":"…","name":"complaints",…}
//! {"type":"record","tenant_id":"…","collection":"complaints","id":"…","version":3,…}
//! {"type":"request_count","tenant_id":"…","date":"2026-12-01","requests":120}
//! {"type":"usage","tenant_id":"…","records":1,"storage_bytes":52}
//! {"type":"audit","tenant_id":"…","chain":"control","seq":1,"id":"…","hash":"…",…}
//! ```
//!
//! Every item names its tenant, and an import refuses a file in which any
//! item names another tenant than the header. The header is written first
//! with room to spare and rewritten in place once the counts are known, so
//! an export streams in one pass and constant memory.

use crate::audit::{AuditChain, AuditEntry};
use crate::ids::{OrgId, RecordId, TenantId, UserId};
use crate::record::{CollectionDef, Record};
use crate::store::{ConfigEntry, TenantUser};
use crate::{Isolation, Role};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `format` field of every export.
pub const FORMAT: &str = "tenantry-export";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes reserved for the header line (it is padded with spaces to this
/// width, so the final header can overwrite the first in place).
pub const HEADER_BYTES: usize = 2048;

/// What an export may hold; all of it by default.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// The tenant row: name, plan, metadata, branding…
    Tenant,
    /// Config entries, and the tenant's wrapped data key with them.
    Config,
    Users,
    Collections,
    Records,
    /// Request counts per day and the data's current usage.
    Usage,
    /// Both audit chains of the tenant.
    Audit,
}

impl DataType {
    pub const ALL: [DataType; 7] = [
        DataType::Tenant,
        DataType::Config,
        DataType::Users,
        DataType::Collections,
        DataType::Records,
        DataType::Usage,
        DataType::Audit,
    ];
}

/// The first line (or the `header` member) of an export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub tenant_id: TenantId,
    pub slug: String,
    pub exported_at: DateTime<Utc>,
    pub data_types: Vec<DataType>,
    /// Items per `type`, as written: an import checks them against the file.
    pub counts: BTreeMap<String, u64>,
}

/// One line of an export after the header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Item {
    Tenant(TenantItem),
    Key(KeyItem),
    Config(ConfigItem),
    User(UserItem),
    Collection(CollectionItem),
    Record(RecordItem),
    RequestCount(RequestCountItem),
    Usage(UsageItem),
    Audit(AuditItem),
}

impl Item {
    /// The `type` of the item, as the header counts it.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Tenant(_) => "tenant",
            Item::Key(_) => "key",
            Item::Config(_) => "config",
            Item::User(_) => "user",
            Item::Collection(_) => "collection",
            Item::Record(_) => "record",
            Item::RequestCount(_) => "request_count",
            Item::Usage(_) => "usage",
            Item::Audit(_) => "audit",
        }
    }

    /// The tenant the item belongs to.
    pub fn tenant_id(&self) -> TenantId {
        match self {
            Item::Tenant(i) => i.tenant_id,
            Item::Key(i) => i.tenant_id,
            Item::Config(i) => i.tenant_id,
            Item::User(i) => i.tenant_id,
            Item::Collection(i) => i.tenant_id,
            Item::Record(i) => i.tenant_id,
            Item::RequestCount(i) => i.tenant_id,
            Item::Usage(i) => i.tenant_id,
            Item::Audit(i) => i.tenant_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantItem {
    pub tenant_id: TenantId,
    pub slug: String,
    pub name: String,
    pub plan: String,
    pub isolation: Isolation,
    pub organization_id: Option<OrgId>,
    pub domain: Option<String>,
    pub metadata: Value,
    pub branding: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The tenant's data key, wrapped by the exporting platform's master key
/// (with the tenant id as associated data): encrypted config values can be
/// opened by an import on the same platform only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyItem {
    pub tenant_id: TenantId,
    /// Base64 (standard alphabet, padded).
    pub wrapped_key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigItem {
    pub tenant_id: TenantId,
    pub key: String,
    /// Plain JSON, or for an encrypted entry the sealed value.
    pub value: Value,
    pub encrypted: bool,
    pub updated_at: DateTime<Utc>,
}

impl ConfigItem {
    pub fn new(tenant_id: TenantId, e: &ConfigEntry) -> Self {
        Self {
            tenant_id,
            key: e.key.clone(),
            value: e.value.clone(),
            encrypted: e.encrypted,
            updated_at: e.updated_at,
        }
    }

    pub fn entry(&self) -> ConfigEntry {
        ConfigEntry {
            key: self.key.clone(),
            value: self.value.clone(),
            encrypted: self.encrypted,
            updated_at: self.updated_at,
        }
    }
}

/// A tenant user; the password only as its argon2 hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserItem {
    pub tenant_id: TenantId,
    pub id: UserId,
    pub email: Option<String>,
    pub name: String,
    pub role: Role,
    pub phone: Option<String>,
    pub password_hash: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserItem {
    pub fn new(tenant_id: TenantId, u: &TenantUser) -> Self {
        Self {
            tenant_id,
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            phone: u.phone.clone(),
            password_hash: u.password_hash.clone(),
            active: u.active,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }

    pub fn user(&self) -> TenantUser {
        TenantUser {
            id: self.id,
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role,
            phone: self.phone.clone(),
            password_hash: self.password_hash.clone(),
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionItem {
    pub tenant_id: TenantId,
    pub name: String,
    pub schema: Option<Value>,
    pub unique: Vec<String>,
    pub indexed: Vec<String>,
    pub required_feature: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CollectionItem {
    pub fn new(tenant_id: TenantId, d: &CollectionDef) -> Self {
        Self {
            tenant_id,
            name: d.name.clone(),
            schema: d.schema.clone(),
            unique: d.unique.clone(),
            indexed: d.indexed.clone(),
            required_feature: d.required_feature.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }

    pub fn def(&self) -> CollectionDef {
        CollectionDef {
            name: self.name.clone(),
            schema: self.schema.clone(),
            unique: self.unique.clone(),
            indexed: self.indexed.clone(),
            required_feature: self.required_feature.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordItem {
    pub tenant_id: TenantId,
    pub collection: String,
    pub id: RecordId,
    pub data: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<UserId>,
}

impl RecordItem {
    pub fn new(tenant_id: TenantId, collection: &str, r: &Record) -> Self {
        Self {
            tenant_id,
            collection: collection.to_owned(),
            id: r.id,
            data: r.data.clone(),
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            created_by: r.created_by,
        }
    }

    pub fn record(&self) -> Record {
        Record {
            id: self.id,
            data: self.data.clone(),
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            created_by: self.created_by,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestCountItem {
    pub tenant_id: TenantId,
    pub date: NaiveDate,
    pub requests: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    pub tenant_id: TenantId,
    pub records: u64,
    pub storage_bytes: u64,
}

/// One entry of one of the tenant's chains, exactly as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditItem {
    pub tenant_id: TenantId,
    pub chain: AuditChain,
    pub seq: i64,
    pub id: uuid::Uuid,
    pub actor: String,
    pub actor_scope: String,
    pub action: String,
    pub resource: String,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: String,
}

impl AuditItem {
    pub fn new(tenant_id: TenantId, seq: i64, e: &AuditEntry) -> Self {
        Self {
            tenant_id,
            chain: e.chain,
            seq,
            id: e.id,
            actor: e.actor.clone(),
            actor_scope: e.actor_scope.clone(),
            action: e.action.clone(),
            resource: e.resource.clone(),
            at: e.at,
            request_id: e.request_id.clone(),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        }
    }

    /// The entry as it would be linked onto another chain: its own fields,
    /// the time it happened; id, seq and hashes are the new chain's.
    pub fn relinked(&self) -> (crate::audit::NewAuditEntry, DateTime<Utc>) {
        (
            crate::audit::NewAuditEntry {
                actor: self.actor.clone(),
                actor_scope: self.actor_scope.clone(),
                action: self.action.clone(),
                resource: self.resource.clone(),
                request_id: self.request_id.clone(),
            },
            self.at,
        )
    }
}

/// Why a line of an import file was refused; `line` counts from 1 (the header).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

impl LineError {
    pub fn new(line: u64, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
        }
    }
}

/// Parses and checks the header line.
pub fn parse_header(line: &str) -> Result<Header, LineError> {
    let value: Value = serde_json::from_str(line.trim())
        .map_err(|e| LineError::new(1, format!("not JSON: {e}")))?;
    if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(LineError::new(
            1,
            format!("not a tenantry export (format must be {FORMAT:?})"),
        ));
    }
    match value.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(LineError::new(
                1,
                format!("unknown format version {v} (this build reads version {VERSION})"),
            ));
        }
        None => return Err(LineError::new(1, "the header has no version")),
    }
    serde_json::from_value(value).map_err(|e| LineError::new(1, format!("bad header: {e}")))
}

/// Parses one item line and checks that it belongs to the header's tenant.
pub fn parse_item(line_no: u64, line: &str, tenant: TenantId) -> Result<Item, LineError> {
    let item: Item = serde_json::from_str(line)
        .map_err(|e| LineError::new(line_no, format!("not a valid item: {e}")))?;
    if item.tenant_id() != tenant {
        return Err(LineError::new(
            line_no,
            format!(
                "names tenant {}, but the file is tenant {tenant}'s",
                item.tenant_id()
            ),
        ));
    }
    Ok(item)
}

/// The header line, padded with spaces to `HEADER_BYTES` (newline included).
pub fn header_line(header: &Header) -> Result<Vec<u8>, String> {
    let mut line = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    if line.len() + 1 > HEADER_BYTES {
        return Err(format!(
            "the export header takes {} bytes, more than the {HEADER_BYTES} reserved",
            line.len()
        ));
    }
    line.resize(HEADER_BYTES - 1, b' ');
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tenant: TenantId) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            tenant_id: tenant,
            slug: "acme".into(),
            exported_at: Utc::now(),
            data_types: DataType::ALL.to_vec(),
            counts: BTreeMap::from([("record".to_owned(), 3)]),
        }
    }

    #[test]
    fn headers_round_trip_padded_and_refuse_other_versions_and_formats() {
        let written = header(TenantId::new());
        let line = header_line(&written).expect("line");
        assert_eq!(line.len(), HEADER_BYTES);
        let text = String::from_utf8(line).expect("utf8");
        assert_eq!(parse_header(&text).expect("parses"), written);
        let newer = text.replacen("\"version\":1", "\"version\":2", 1);
        let e = parse_header(&newer).expect_err("version 2");
        assert!(e.message.contains("unknown format version 2"), "{e}");
        let other = text.replacen(FORMAT, "something-else", 1);
        assert!(parse_header(&other).is_err());
    }

    #[test]
    fn items_naming_another_tenant_or_unknown_fields_are_refused_with_their_line() {
        let t = TenantId::new();
        let other = TenantId::new();
        let line =
            format!(r#"{{"type":"usage","tenant_id":"{other}","records":1,"storage_bytes":2}}"#);
        let e = parse_item(7, &line, t).expect_err("foreign");
        assert_eq!(e.line, 7);
        assert!(e.message.contains(&other.to_string()), "{e}");
        let extra =
            format!(r#"{{"type":"usage","tenant_id":"{t}","records":1,"storage_bytes":2,"x":1}}"#);
        assert!(parse_item(3, &extra, t).is_err());
        let ok = format!(r#"{{"type":"usage","tenant_id":"{t}","records":1,"storage_bytes":2}}"#);
        assert_eq!(parse_item(3, &ok, t).expect("ok").kind(), "usage");
    }
}
