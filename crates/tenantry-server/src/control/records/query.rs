//! Record lists: filters, sort and keyset cursor parsed from the request and
//! checked against the collection's definition, then one page read.

use crate::control::Records;
use crate::error::{Result, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantry::Acting;
use tenantry::RecordId;
use tenantry::record::{
    Filter, FilterOp, Operand, Record, RecordCursor, RecordQuery, SortKey, sort_value, valid_field,
};

/// `?filter[f][op]=&sort=&limit=&cursor=` of a record list, already parsed.
#[derive(Debug, Default)]
pub struct ListParams {
    pub filters: Vec<(String, Option<String>, String)>,
    pub sort: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CursorBody {
    s: String,
    k: Value,
    id: RecordId,
}

impl Records {
    pub async fn list_records(
        &self,
        acting: &Acting,
        collection: &str,
        params: ListParams,
    ) -> Result<(Vec<Record>, Option<String>)> {
        let data = self.core.tenant_data(&acting.tenant).await?;
        let Some(def) = self
            .usable_collection(acting, data.as_ref(), collection, false)
            .await?
        else {
            return Ok((Vec::new(), None));
        };
        let mut v = Validator::default();
        let mut filters = Vec::new();
        for (field, op, raw) in params.filters {
            let op_name = op.as_deref().unwrap_or("eq");
            let Some(op) = FilterOp::parse(op_name) else {
                v.push(
                    &format!("filter[{field}]"),
                    format!("unknown operator `{op_name}` (eq, ne, gte, lte, in)"),
                );
                continue;
            };
            if !valid_field(&field) {
                v.push(
                    &format!("filter[{field}]"),
                    "fields are dot-separated identifiers",
                );
                continue;
            }
            let operands = match op {
                FilterOp::In => raw.split(',').map(Operand::parse).collect(),
                _ => vec![Operand::parse(&raw)],
            };
            filters.push(Filter {
                field,
                op,
                operands,
            });
        }
        let sort_raw = params.sort.unwrap_or_else(|| "created_at".to_owned());
        let (descending, sort_name) = match sort_raw.strip_prefix('-') {
            Some(rest) => (true, rest.to_owned()),
            None => (false, sort_raw.trim_start_matches('+').to_owned()),
        };
        let sort = match sort_name.as_str() {
            "created_at" => SortKey::CreatedAt,
            "updated_at" => SortKey::UpdatedAt,
            f if def.indexed.iter().any(|i| i == f) => SortKey::Field(f.to_owned()),
            _ => {
                v.push("sort", "sort on created_at, updated_at or an indexed field");
                SortKey::CreatedAt
            }
        };
        let limit = tenantry::page::limit(params.limit);
        let after = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                let parsed = tenantry::page::decode_cursor(c)
                    .and_then(|b| serde_json::from_slice::<CursorBody>(&b).ok())
                    .filter(|b| b.s == sort_raw);
                if parsed.is_none() {
                    v.push("cursor", "not a cursor of this list and sort");
                }
                parsed.map(|b| RecordCursor { key: b.k, id: b.id })
            }
        };
        v.finish()?;
        let query = RecordQuery {
            filters,
            sort: sort.clone(),
            descending,
            after,
            limit: limit + 1,
        };
        let mut rows = data.list_records(&def, &query).await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|last| {
                let body = CursorBody {
                    s: sort_raw.clone(),
                    k: sort_value(last, &sort),
                    id: last.id,
                };
                tenantry::page::encode_cursor(&serde_json::to_vec(&body).unwrap_or_default())
            })
        } else {
            None
        };
        Ok((rows, next))
    }
}
