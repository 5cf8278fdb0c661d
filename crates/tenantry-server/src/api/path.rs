//! Ids in the path, parsed once at the edge, so the services take typed ids
//! only. A segment that is not a well-formed id names nothing: it answers
//! the same 404 as an id that exists nowhere.

use crate::error::Error;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use tenantry::{JobId, RecordId, UserId};

/// An id type, and what a 404 says was not found.
pub trait PathId: std::str::FromStr + Send {
    const RESOURCE: &'static str;

    fn parse_segment(segment: &str) -> Result<Self, Error> {
        segment
            .parse()
            .map_err(|_| Error::NotFound(Self::RESOURCE.into()))
    }
}

impl PathId for RecordId {
    const RESOURCE: &'static str = "record";
}

impl PathId for UserId {
    const RESOURCE: &'static str = "user";
}

impl PathId for JobId {
    const RESOURCE: &'static str = "job";
}

/// `…/{id}`: the route's one segment, as a `T`.
pub struct IdPath<T>(pub T);

impl<S: Send + Sync, T: PathId> FromRequestParts<S> for IdPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(segment) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound(T::RESOURCE.into()))?;
        T::parse_segment(&segment).map(IdPath)
    }
}

/// `/collections/{name}/records/{id}`.
pub struct RecordPath {
    pub collection: String,
    pub id: RecordId,
}

impl<S: Send + Sync> FromRequestParts<S> for RecordPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path((collection, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound(RecordId::RESOURCE.into()))?;
        Ok(Self {
            collection,
            id: RecordId::parse_segment(&id)?,
        })
    }
}
