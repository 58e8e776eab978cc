//! Integration tests: each spawns the real `akbackup` binary in a fresh temp dir.
//!
//! One binary, one module per area: `cli` (errors, config, locks), `roundtrip` (backup,
//! target restore, dedup, verify, retention), `restore` (in-place restore and restart),
//! `interop` (the standard `restic` client reads what `akbackup` wrote), `ssdb` (SSDB stores
//! under a live LevelDB writer, stop mode and restore orchestration), `bench` (the
//! benchmark harness as a smoke run).

mod bench;
mod cli;
mod compat;
mod demo;
mod doctor;
mod faults;
mod hooks;
mod hosts;
mod interop;
mod keys;
mod logs;
mod mongodb;
mod monitoring;
mod owners;
mod package;
mod platform;
mod restore;
mod retention;
mod roundtrip;
mod s3;
mod schedule;
mod sftp;
mod snapshot;
mod ssdb;
mod support;
mod webhook;
