//! Real `meshrpc` processes: started by the tests, always killed, talking over loopback
//! (and network namespaces the tests create). One binary, one module per subject.

#[path = "../support/mod.rs"]
mod support;

mod actors_process;
mod bench_plots;
mod bootstrap;
mod chaos;
mod dashboard;
mod first_hour;
mod gateway;
mod hosts;
mod membership;
mod mixed_process;
mod process;
mod rolling_restart;
mod security;
mod streams_process;
