//! The HTTP API as data: routes, request/response types, JSON bodies, errors.

pub mod error;
pub mod route;
pub mod wire;

pub use error::ApiError;
pub use route::{Auth, Op, Route, RouteMatch, ROUTES};
pub use wire::{Request, Response};
