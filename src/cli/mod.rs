//! Client subcommands.
