//! The transport state machine (placeholder while the engine lands).
