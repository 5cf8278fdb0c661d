//! Authentication primitives: password hashing, access tokens, login
//! attempts, one-time codes. Requests meet them through `api::scope`.

pub mod guard;
pub mod otp;
pub mod password;
pub mod token;

pub use token::TokenKeys;
