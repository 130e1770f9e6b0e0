//! Running Polars queries the one way the stages run them. Below the metrics, the host
//! groups and the replay, which all collect through it.

use polars::prelude::*;

/// Runs a query on Polars' streaming engine: scans, filters and group-bys stream in
/// bounded memory; operators it cannot stream fall back to the in-memory engine.
pub fn collect(lf: LazyFrame) -> PolarsResult<DataFrame> {
    Ok(lf.collect_with_engine(Engine::Streaming)?.unwrap_single())
}
