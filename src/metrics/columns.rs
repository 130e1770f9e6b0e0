//! Reading whole columns of a metrics table into plain vectors (NULL-tolerant), for the
//! stages that turn metrics into Rust values (advise, report, replay).

use polars::prelude::*;

/// An integer column (NULL stays None).
pub fn ints(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i64>>> {
    let s = df
        .column(name)?
        .as_materialized_series()
        .cast(&DataType::Int64)?;
    Ok(s.i64()?.iter().collect())
}

/// A float column (NULL stays None).
pub fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    let s = df
        .column(name)?
        .as_materialized_series()
        .cast(&DataType::Float64)?;
    Ok(s.f64()?.iter().collect())
}

/// A string column (NULL becomes "").
pub fn strings(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect())
}

/// A timestamp column as epoch microseconds (NULL becomes 0).
pub fn micros(df: &DataFrame, name: &str) -> PolarsResult<Vec<i64>> {
    let s = df
        .column(name)?
        .as_materialized_series()
        .cast(&DataType::Datetime(TimeUnit::Microseconds, None))?
        .cast(&DataType::Int64)?;
    Ok(s.i64()?.iter().map(Option::unwrap_or_default).collect())
}
