//! Every `#[pg_extern]` of the extension, grouped by schema. Nothing else lives here.

mod pgr;
