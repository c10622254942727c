//! `squib`: a Firecracker-compatible microVM monitor.
mod cli;

fn main() {}
