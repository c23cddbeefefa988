//! Every `#[pg_extern]` of the extension, grouped by schema, and its settings.

mod pgr;
pub mod settings;
