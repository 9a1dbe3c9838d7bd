//! The status page: one HTML document that polls `/api/status` and `/api/history`.

pub const PAGE: &str = include_str!("page.html");
