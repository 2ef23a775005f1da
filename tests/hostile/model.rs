//! Hostile input: model (filled by issue #14's work).
