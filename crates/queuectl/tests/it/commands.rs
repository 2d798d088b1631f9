//! Tests of the one-shot commands, events and work.
