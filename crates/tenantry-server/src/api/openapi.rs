//! The OpenAPI document's parts that no handler annotation gives: the
//! bearer scheme, and the errors every operation can answer with.

use super::Problem;
use super::problem::MEDIA_TYPE as PROBLEM;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tenantry",
        version = "1",
        description = "Multi-tenant SaaS backend: control plane, identity and tenant data. \
                       Errors are RFC 9457 problem+json with a stable `code`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every error is problem+json, which `body = Problem` in a handler's
/// annotation documents as `application/json`; and any operation can answer
/// with an error the edge produces before or after its handler (401, 408,
/// 413, 429, 503, a malformed parameter's 400…), which `default` documents
/// once instead of every handler listing them.
pub fn finish(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            for (status, response) in op.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if status.starts_with(['4', '5'])
                    && let Some(content) = response.content.shift_remove("application/json")
                {
                    response.content.insert(PROBLEM.into(), content);
                }
            }
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description("An error (RFC 9457 problem details with a stable `code`)")
                        .content(
                            PROBLEM,
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build()
                        .into()
                });
        }
    }
    openapi
}
