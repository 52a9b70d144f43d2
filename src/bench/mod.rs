//! Load generators and benchmarks (`campaignd bench …`). Figures are printed as a table, with
//! the baseline measured in the same run, never asserted on in tests.

pub mod ingest;
pub mod workload;
