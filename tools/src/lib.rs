//! Shared code of the command-line tools. Built out in the tool issues.
#![deny(missing_docs)]
