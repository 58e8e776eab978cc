//! Sandbox platform generator.
