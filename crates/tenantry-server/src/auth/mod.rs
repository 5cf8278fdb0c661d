//! Authentication: password hashing, access tokens, the request's principal.

pub mod extract;
pub mod password;
pub mod token;

pub use extract::Authenticated;
pub use token::TokenKeys;
