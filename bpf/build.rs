//! Compiles the eBPF C programs (`bpf/*.c`) with clang into `OUT_DIR` and
//! generates the Rust `Reason` enum from `include/abi/reasons.def`.
//!
//! `PALISADE_CLANG` overrides the clang binary (default `clang`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(msg) = run() {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    println!("cargo:rerun-if-env-changed=PALISADE_CLANG");
    println!("cargo:rerun-if-changed=build.rs");

    let mut sources = Vec::new();
    for dir in [
        manifest.clone(),
        manifest.join("lib"),
        manifest.join("include/abi"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let entries = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("c") => {
                    println!("cargo:rerun-if-changed={}", path.display());
                    sources.push(path);
                }
                Some("h" | "def") => println!("cargo:rerun-if-changed={}", path.display()),
                _ => {}
            }
        }
    }
    sources.sort();

    let clang = env::var("PALISADE_CLANG").unwrap_or_else(|_| "clang".to_owned());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            return Err(format!(
                "cannot run `{clang}` to compile the eBPF programs: install it with \
                 `apt-get install clang libbpf-dev` (Debian package `clang`), or set \
                 PALISADE_CLANG to a clang binary that supports `-target bpf`"
            ))
        }
    }

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = Path::new("/usr/include").join(format!("{arch}-linux-gnu"));
    for src in &sources {
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("prog");
        let obj = out.join(format!("{stem}.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg("-I")
            .arg(manifest.join("include"))
            .arg("-I")
            .arg(manifest.join("lib"));
        if multiarch.is_dir() {
            cmd.arg("-I").arg(&multiarch);
        }
        cmd.arg("-c").arg(src).arg("-o").arg(&obj);
        let output = cmd
            .output()
            .map_err(|e| format!("running {clang} for {}: {e}", src.display()))?;
        if !output.status.success() {
            return Err(format!(
                "compiling {} failed ({cmd:?}):\n{}\n(missing <bpf/bpf_helpers.h>? `apt-get install libbpf-dev`)",
                src.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }

    let def = manifest.join("include/abi/reasons.def");
    let text = fs::read_to_string(&def).map_err(|e| format!("reading {}: {e}", def.display()))?;
    let reasons = parse_reasons(&text).map_err(|e| format!("{}: {e}", def.display()))?;
    fs::write(out.join("reasons.rs"), gen_reasons(&reasons)).map_err(|e| e.to_string())?;
    Ok(())
}

struct ReasonDef {
    name: String,
    code: i32,
    text: String,
}

/// Parses the `REASON(NAME, code, "text")` lines of reasons.def.
fn parse_reasons(text: &str) -> Result<Vec<ReasonDef>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("REASON(") else {
            continue;
        };
        let err = |what: &str| format!("line {}: {what}: {line}", n + 1);
        let rest = rest.strip_suffix(')').ok_or_else(|| err("missing `)`"))?;
        let mut parts = rest.splitn(3, ',');
        let name = parts
            .next()
            .ok_or_else(|| err("no name"))?
            .trim()
            .to_owned();
        let code = parts
            .next()
            .ok_or_else(|| err("no code"))?
            .trim()
            .parse::<i32>()
            .map_err(|_| err("code is not an integer"))?;
        let text = parts.next().ok_or_else(|| err("no text"))?.trim();
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or_else(|| err("text is not a string literal"))?
            .to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err("name must be UPPER_SNAKE_CASE"));
        }
        out.push(ReasonDef { name, code, text });
    }
    if out.is_empty() {
        return Err("no REASON(...) lines".to_owned());
    }
    Ok(out)
}

fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

fn gen_reasons(reasons: &[ReasonDef]) -> String {
    let mut s = String::new();
    s.push_str("// Generated by build.rs from include/abi/reasons.def. Do not edit.\n\n");
    s.push_str("/// Verdict reason, generated from `bpf/include/abi/reasons.def` (the one table shared by\n/// C, Rust and the audit schema). Drops are negative; `Forwarded` is 0.\n");
    s.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(i32)]\npub enum Reason {\n");
    for r in reasons {
        let _ = writeln!(
            s,
            "    /// {} (`PAL_REASON_{}` = {})",
            r.text, r.name, r.code
        );
        let _ = writeln!(s, "    {} = {},", camel(&r.name), r.code);
    }
    s.push_str("}\n\nimpl Reason {\n");
    s.push_str("    /// Every reason, in the order of reasons.def.\n    pub const ALL: &'static [Reason] = &[\n");
    for r in reasons {
        let _ = writeln!(s, "        Reason::{},", camel(&r.name));
    }
    s.push_str("    ];\n\n");
    s.push_str("    /// The numeric code (as in C's `enum pal_reason`).\n    pub const fn code(self) -> i32 {\n        self as i32\n    }\n\n");
    s.push_str("    /// The reason with this code, if any.\n    pub const fn from_code(code: i32) -> Option<Reason> {\n        match code {\n");
    for r in reasons {
        let _ = writeln!(
            s,
            "            {} => Some(Reason::{}),",
            r.code,
            camel(&r.name)
        );
    }
    s.push_str("            _ => None,\n        }\n    }\n\n");
    s.push_str("    /// Snake-case name, e.g. `\"policy_denied\"`.\n    pub const fn as_str(self) -> &'static str {\n        match self {\n");
    for r in reasons {
        let _ = writeln!(
            s,
            "            Reason::{} => \"{}\",",
            camel(&r.name),
            r.name.to_ascii_lowercase()
        );
    }
    s.push_str("        }\n    }\n\n");
    s.push_str("    /// Human-readable description from reasons.def.\n    pub const fn description(self) -> &'static str {\n        match self {\n");
    for r in reasons {
        let _ = writeln!(s, "            Reason::{} => {:?},", camel(&r.name), r.text);
    }
    s.push_str("        }\n    }\n}\n");
    s
}
