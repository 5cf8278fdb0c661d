//! The records plane: collections, record writes and reads (lists are in
//! `query`; statistics and usage are the analytics plane's). Every call
//! works on the `Acting` tenant only.

pub mod query;

use super::{Records, audit_entry};
use crate::error::{Error, FieldError, Result, Validator};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tenantry::Acting;
use tenantry::audit::NewAuditEntry;
use tenantry::record::{
    CollectionDef, Record, collection_resource, merge_patch, record_resource,
    valid_collection_name, valid_field,
};
use tenantry::store::{StoreError, TenantData};
use tenantry::{RecordId, Role, Tenant};

/// Indexes cost every write of the database (shared.db: every tenant's).
const MAX_INDEXED: usize = 8;

/// Body of `PUT /api/v1/collections/{name}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionBody {
    /// A JSON Schema every record must satisfy.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Fields whose values are unique within the tenant.
    #[serde(default)]
    pub unique: Vec<String>,
    /// Fields backed by an index; lists may sort on them.
    #[serde(default)]
    pub indexed: Vec<String>,
    /// A plan feature a tenant needs to use the collection.
    pub required_feature: Option<String>,
}

/// The client's precondition on a record's version (`If-Match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Version(i64),
}

fn not_found() -> Error {
    Error::NotFound("record".into())
}

/// Compiled JSON Schemas by (tenant, collection), each beside the schema it
/// was compiled from, so a redefinition compiles anew: compiling costs far
/// more than validating, and once ran on every write.
pub type CompiledSchemas =
    quick_cache::sync::Cache<(tenantry::TenantId, String), Arc<(Value, jsonschema::Validator)>>;

fn schema_errors(
    compiled: &CompiledSchemas,
    tenant: tenantry::TenantId,
    def: &CollectionDef,
    data: &Value,
) -> Result<()> {
    let Some(schema) = &def.schema else {
        return Ok(());
    };
    let key = (tenant, def.name.clone());
    let entry = match compiled.get(&key) {
        Some(entry) if entry.0 == *schema => entry,
        _ => {
            let validator = jsonschema::validator_for(schema).map_err(|e| {
                Error::Internal(format!(
                    "stored schema of {} does not compile: {e}",
                    def.name
                ))
            })?;
            let entry = Arc::new((schema.clone(), validator));
            compiled.insert(key, entry.clone());
            entry
        }
    };
    let errors: Vec<FieldError> = entry
        .1
        .iter_errors(data)
        .map(|e| {
            let path = e.instance_path().to_string();
            let field = path.trim_start_matches('/').replace('/', ".");
            FieldError::new(
                if field.is_empty() {
                    "body".to_owned()
                } else {
                    field
                },
                e.to_string(),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// Maps the data store's refusals of a record write.
fn write_error(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => not_found(),
        StoreError::VersionMismatch => Error::PreconditionFailed,
        StoreError::QuotaExceeded => Error::QuotaExceeded("the plan's storage is used up".into()),
        StoreError::Conflict(field) => Error::Conflict(format!("a record with this `{field}`")),
        other => other.into(),
    }
}

impl Records {
    fn require_admin(acting: &Acting) -> Result<()> {
        match acting.principal.role {
            Role::SuperAdmin | Role::OrgAdmin | Role::Admin => Ok(()),
            _ => Err(Error::Forbidden("only admins define collections".into())),
        }
    }

    pub async fn put_collection(
        &self,
        acting: &Acting,
        name: &str,
        body: CollectionBody,
    ) -> Result<(CollectionDef, bool)> {
        Self::require_admin(acting)?;
        let mut v = Validator::default();
        v.check(
            valid_collection_name(name),
            "name",
            "must match [a-z][a-z0-9_]{0,62}",
        );
        v.check(
            body.indexed.len() <= MAX_INDEXED,
            "indexed",
            "at most 8 indexed fields per collection",
        );
        v.check(
            body.unique.len() <= MAX_INDEXED,
            "unique",
            "at most 8 unique fields per collection",
        );
        for (list, field) in [(&body.unique, "unique"), (&body.indexed, "indexed")] {
            for f in list {
                v.check(
                    valid_field(f),
                    field,
                    "fields are dot-separated identifiers",
                );
            }
        }
        if let Some(schema) = &body.schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            v.push("schema", format!("not a valid JSON Schema: {e}"));
        }
        if let Some(feature) = &body.required_feature {
            v.check(
                valid_field(feature) && !feature.contains('.'),
                "required_feature",
                "must be a feature name",
            );
        }
        v.finish()?;
        let now = self.core.clock.now();
        let dedup = |mut l: Vec<String>| {
            l.sort();
            l.dedup();
            l
        };
        let template = CollectionDef {
            name: name.to_owned(),
            schema: body.schema,
            unique: dedup(body.unique),
            indexed: dedup(body.indexed),
            required_feature: body.required_feature,
            created_at: now,
            updated_at: now,
        };
        let audit = audit_entry(
            &acting.principal,
            "collection.put",
            collection_resource(name),
        );
        let (def, created) = self
            .core
            .on_tenant_data(&acting.tenant, |data| {
                let (template, audit) = (&template, &audit);
                async move {
                    let existing = data.collection(name).await?;
                    let def = CollectionDef {
                        created_at: existing.as_ref().map_or(now, |e| e.created_at),
                        ..template.clone()
                    };
                    self.check_collection_limits(&acting.tenant, data.as_ref(), &def)
                        .await?;
                    let created = data
                        .put_collection(&def, audit)
                        .await
                        .map_err(write_error)?;
                    Ok((def, created))
                }
            })
            .await?;
        self.core
            .caches
            .collections
            .invalidate(&(acting.tenant.id, def.name.clone()));
        Ok((def, created))
    }

    /// The plan's `max_collections` and `max_indexed_fields`, with `def` in
    /// place of the collection of its name (or added). Two definitions at
    /// once may pass together: the limits bound what one tenant can do to
    /// the shared tier, they are not a count to the unit.
    async fn check_collection_limits(
        &self,
        tenant: &Tenant,
        data: &dyn TenantData,
        def: &CollectionDef,
    ) -> Result<()> {
        let limits = self.core.plan(&tenant.plan).await?.limits.clone();
        let all = data.collections().await?;
        let others = || all.iter().filter(|c| c.name != def.name);
        if let Some(max) = limits.max_collections
            && others().count() as u64 >= max
        {
            return Err(Error::QuotaExceeded(format!(
                "the plan allows {max} collections"
            )));
        }
        let fields: std::collections::BTreeSet<&str> = others()
            .chain([def])
            .flat_map(|c| c.indexed.iter().map(String::as_str))
            .collect();
        if let Some(max) = limits.max_indexed_fields
            && fields.len() as u64 > max
        {
            return Err(Error::QuotaExceeded(format!(
                "the plan allows {max} distinct indexed fields over all collections"
            )));
        }
        Ok(())
    }

    /// Up to `limit` collections named after `after`, by name.
    pub async fn list_collections(
        &self,
        acting: &Acting,
        after: &str,
        limit: u32,
    ) -> Result<Vec<CollectionDef>> {
        Ok(self
            .core
            .tenant_data(&acting.tenant)
            .await?
            .collections_after(after, limit)
            .await?)
    }

    /// The collection's definition, checked against the tenant's features.
    /// `implicit`: a write to an undefined collection defines it, schemaless.
    pub(super) async fn usable_collection(
        &self,
        acting: &Acting,
        data: &dyn TenantData,
        name: &str,
        implicit: bool,
    ) -> Result<Option<CollectionDef>> {
        if let Some(def) = self.core.collection(acting, data, name).await? {
            return Ok(Some(def));
        }
        if !implicit {
            return Ok(None);
        }
        let def = CollectionDef::implicit(name, self.core.clock.now());
        self.check_collection_limits(&acting.tenant, data, &def)
            .await?;
        // Never an upsert: an admin's concurrent definition wins.
        let audit = audit_entry(
            &acting.principal,
            "collection.create",
            collection_resource(name),
        );
        data.create_collection_if_absent(&def, &audit).await?;
        self.core
            .caches
            .collections
            .invalidate(&(acting.tenant.id, name.to_owned()));
        self.core
            .collection(acting, data, name)
            .await
            .map(|found| found.or(Some(def)))
    }

    async fn max_storage(&self, tenant: &Tenant) -> Result<Option<u64>> {
        Ok(self.core.plan(&tenant.plan).await?.limits.max_storage_bytes)
    }

    pub async fn create_record(
        &self,
        acting: &Acting,
        collection: &str,
        body: Value,
    ) -> Result<Record> {
        if !body.is_object() {
            return Err(Error::invalid("body", "a record is a JSON object"));
        }
        let now = self.core.clock.now();
        let record = Record {
            id: RecordId::new(),
            data: body,
            version: 1,
            created_at: now,
            updated_at: now,
            created_by: Some(acting.principal.user_id),
        };
        let max = self.max_storage(&acting.tenant).await?;
        self.core
            .on_tenant_data(&acting.tenant, |data| {
                let record = &record;
                async move {
                    let def = self
                        .usable_collection(acting, data.as_ref(), collection, true)
                        .await?
                        .ok_or_else(|| Error::NotFound("collection".into()))?;
                    schema_errors(&self.schemas, acting.tenant.id, &def, &record.data)?;
                    let audit = record_audit(acting, "record.create", &def, record.id);
                    data.insert_record(&def, record, max, &audit)
                        .await
                        .map_err(write_error)
                }
            })
            .await?;
        Ok(record)
    }

    pub async fn get_record(
        &self,
        acting: &Acting,
        collection: &str,
        id: RecordId,
    ) -> Result<Record> {
        self.core
            .on_tenant_data(&acting.tenant, |data| async move {
                self.usable_collection(acting, data.as_ref(), collection, false)
                    .await?
                    .ok_or_else(not_found)?;
                data.record(collection, id).await?.ok_or_else(not_found)
            })
            .await
    }

    /// Replaces (`patch: false`) or merge-patches a record's data, honouring
    /// `If-Match`. Without it, concurrent writers are serialised by retrying.
    pub async fn write_record(
        &self,
        acting: &Acting,
        collection: &str,
        id: RecordId,
        body: Value,
        patch: bool,
        if_match: Option<IfMatch>,
    ) -> Result<Record> {
        if !patch && !body.is_object() {
            return Err(Error::invalid("body", "a record is a JSON object"));
        }
        let max = self.max_storage(&acting.tenant).await?;
        self.core
            .on_tenant_data(&acting.tenant, |data| {
                let body = &body;
                async move {
                    let def = self
                        .usable_collection(acting, data.as_ref(), collection, false)
                        .await?
                        .ok_or_else(not_found)?;
                    self.rewrite(acting, data.as_ref(), &def, id, body, patch, if_match, max)
                        .await
                }
            })
            .await
    }

    /// `write_record` on one copy of the tenant's data.
    #[allow(clippy::too_many_arguments)]
    async fn rewrite(
        &self,
        acting: &Acting,
        data: &dyn TenantData,
        def: &CollectionDef,
        id: RecordId,
        body: &Value,
        patch: bool,
        if_match: Option<IfMatch>,
        max: Option<u64>,
    ) -> Result<Record> {
        let collection = def.name.as_str();
        for _attempt in 0..5 {
            let current = data.record(collection, id).await?.ok_or_else(not_found)?;
            if let Some(IfMatch::Version(v)) = if_match
                && v != current.version
            {
                return Err(Error::PreconditionFailed);
            }
            let mut next = current.clone();
            if patch {
                merge_patch(&mut next.data, body);
                if !next.data.is_object() {
                    return Err(Error::invalid(
                        "body",
                        "the patched record must stay a JSON object",
                    ));
                }
            } else {
                next.data = body.clone();
            }
            schema_errors(&self.schemas, acting.tenant.id, def, &next.data)?;
            next.version = current.version + 1;
            next.updated_at = self.core.clock.now();
            let action = if patch { "record.patch" } else { "record.put" };
            let audit = record_audit(acting, action, def, next.id);
            match data
                .update_record(def, &next, current.version, max, &audit)
                .await
            {
                Ok(()) => return Ok(next),
                // Someone else wrote in between: with If-Match that is the
                // client's precondition failing; without, read again.
                Err(StoreError::VersionMismatch)
                    if !matches!(if_match, Some(IfMatch::Version(_))) =>
                {
                    continue;
                }
                Err(e) => return Err(write_error(e)),
            }
        }
        Err(Error::Unavailable(
            "the record is being written too often; retry".into(),
        ))
    }

    pub async fn delete_record(
        &self,
        acting: &Acting,
        collection: &str,
        id: RecordId,
        if_match: Option<IfMatch>,
    ) -> Result<()> {
        let expected = match if_match {
            Some(IfMatch::Version(v)) => Some(v),
            _ => None,
        };
        self.core
            .on_tenant_data(&acting.tenant, |data| async move {
                let def = self
                    .usable_collection(acting, data.as_ref(), collection, false)
                    .await?
                    .ok_or_else(not_found)?;
                let audit = record_audit(acting, "record.delete", &def, id);
                data.delete_record(&def, id, expected, &audit)
                    .await
                    .map_err(write_error)
            })
            .await
    }
}

/// The audit entry of a record change.
fn record_audit(acting: &Acting, action: &str, def: &CollectionDef, id: RecordId) -> NewAuditEntry {
    audit_entry(&acting.principal, action, record_resource(&def.name, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A schema is compiled once per definition and reused by later writes;
    /// a redefinition is honoured at once.
    #[test]
    fn schemas_compile_once_per_definition() {
        let compiled = CompiledSchemas::new(16);
        let tenant = tenantry::TenantId::new();
        let mut def = CollectionDef::implicit("notes", chrono::Utc::now());
        def.schema = Some(json!({"type": "object", "required": ["title"]}));
        assert!(schema_errors(&compiled, tenant, &def, &json!({"title": "a"})).is_ok());
        let first = compiled.get(&(tenant, "notes".into())).expect("cached");
        assert!(schema_errors(&compiled, tenant, &def, &json!({})).is_err());
        let again = compiled.get(&(tenant, "notes".into())).expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "compiled once");

        def.schema = Some(json!({"type": "object", "required": ["body"]}));
        assert!(schema_errors(&compiled, tenant, &def, &json!({"title": "a"})).is_err());
        assert!(schema_errors(&compiled, tenant, &def, &json!({"body": "b"})).is_ok());
    }
}
