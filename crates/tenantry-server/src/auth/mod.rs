//! Authentication: password hashing, access tokens, the request's principal.

pub mod extract;
pub mod guard;
pub mod otp;
pub mod password;
pub mod token;

pub use extract::{Authenticated, TenantScope};
pub use token::TokenKeys;
