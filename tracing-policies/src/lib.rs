//! Tetragon-compatible tracing policies (`cilium.io/v1alpha1`
//! `TracingPolicy` and `TracingPolicyNamespaced`): the model, the parser and
//! the validation.
//!
//! - [`parse_documents`] reads a multi-document YAML stream and checks each
//!   policy completely; errors name the file, the document, the YAML path
//!   (`spec.kprobes[0].selectors[1].matchArgs[0].operator`) and what would
//!   fix it.
//! - [`requirements`] lists the hook kinds and features a policy needs; the
//!   agent checks them against the running kernel.
//! - uprobes and USDTs are parsed but refused ("uprobes are not supported").
//!
//! - [`CompiledSelectors`] evaluates a hook's selectors over a plain-data
//!   [`Context`] with Tetragon's semantics (see [`eval`]).
//!
//! Selector semantics are documented in [`model`] and [`eval`]. The crate is
//! pure: no I/O, no syscalls.
#![forbid(unsafe_code)]

pub mod compile;
pub mod eval;
pub mod head_filter;
pub mod model;
pub mod parse;
pub mod syscall_route;
#[cfg(any(test, feature = "test-host"))]
pub mod test_host;
pub mod tpformat;
pub mod validate;
pub mod values;

pub use compile::{compile, CompileOptions, CompiledHook, CompiledPolicy, Host, KernelFeatures};
pub use eval::{
    hooks, Ancestor, ArgValue, Capabilities, CompiledSelectors, Context, Hook, ListSource, Match,
    Namespaces, PathCoverage, PolicyHook, Process, ResolvedLists, Sock,
};
pub use model::{
    ActionKind, ActionSelector, ArgClass, ArgOperator, ArgSelector, ArgType, KProbeArg, KProbeSpec,
    LsmHookSpec, Selector, TracepointSpec, TracingPolicy, TracingPolicyKind, TracingPolicySpec,
};
pub use parse::{parse_documents, Location, ParseError};
pub use validate::{
    policy_mode, requirements, resolve_arg, validate, PolicyMode, Requirement, ValidationError,
    MAX_SELECTORS, MAX_VALUES,
};
