//! The identity plane: who may act. Sessions (password and OTP login,
//! registration, refresh rotation), tenant users and their roles, the
//! tenant's password and session policy, and platform staff.

pub mod admins;
pub mod policy;
pub mod sessions;
pub mod users;
