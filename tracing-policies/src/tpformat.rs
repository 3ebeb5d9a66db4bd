//! Parser of a tracepoint's `format` file
//! (`/sys/kernel/tracing/events/<subsystem>/<event>/format`): the fields of
//! the record with their offsets, sizes and signedness. Tetragon's
//! tracepoint `args[].index` counts these fields from 0, common fields
//! included.

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpField {
    /// The C declaration without the name (`unsigned long`, `__data_loc char[]`).
    pub c_type: String,
    /// Field name.
    pub name: String,
    /// Byte offset in the record.
    pub offset: u16,
    /// Size in bytes.
    pub size: u16,
    /// Signed integer.
    pub signed: bool,
}

impl TpField {
    /// A `__data_loc` dynamic string (`__data_loc char[] filename`).
    pub fn is_data_loc(&self) -> bool {
        self.c_type.starts_with("__data_loc")
    }

    /// A pointer to a user-space string (`const char * filename` of the
    /// syscall tracepoints).
    pub fn is_char_pointer(&self) -> bool {
        self.c_type.contains("char") && self.c_type.ends_with('*')
    }
}

/// Parses the text of a format file. Lines that are not `field:` lines are
/// skipped; a malformed `field:` line is an error naming it.
pub fn parse_format(text: &str) -> Result<Vec<TpField>, String> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let bad = || format!("malformed tracepoint format line {line:?}");
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        let mut signed = false;
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<u16>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<u16>().ok();
            } else if let Some(v) = part.strip_prefix("signed:") {
                signed = v == "1";
            }
        }
        let decl = decl.ok_or_else(bad)?;
        let (c_type, name) = split_decl(decl).ok_or_else(bad)?;
        fields.push(TpField {
            c_type,
            name,
            offset: offset.ok_or_else(bad)?,
            size: size.ok_or_else(bad)?,
            signed,
        });
    }
    if fields.is_empty() {
        return Err("the tracepoint format has no fields".into());
    }
    Ok(fields)
}

/// Where a syscall tracepoint's record (`syscalls:sys_enter_<name>`) puts
/// its first argument: after the common fields and `__syscall_nr`.
pub const SYSCALL_ARGS_OFFSET: u16 = 16;

/// The syscall arguments of a `syscalls:sys_enter_<name>` record: its
/// 8-byte fields from [`SYSCALL_ARGS_OFFSET`] on, one after the other (the
/// record ends after the last; fields a kernel may add past them, such as
/// copies of user strings, are not arguments). A syscall has at most six.
pub fn syscall_args(fields: &[TpField]) -> usize {
    (0..6u16)
        .take_while(|&k| {
            fields
                .iter()
                .any(|f| f.size == 8 && f.offset == SYSCALL_ARGS_OFFSET + 8 * k)
        })
        .count()
}

/// `unsigned long args[6]` -> (`unsigned long [6]`... kept as type), `args`.
fn split_decl(decl: &str) -> Option<(String, String)> {
    let decl = decl.trim();
    // Only a suffix after the name is an array (`args[6]`); `char[]` in
    // `__data_loc char[] name` belongs to the type.
    let (head, array) = match decl.strip_suffix(']').and_then(|d| d.rfind('[')) {
        Some(i) => (&decl[..i], &decl[i..]),
        None => (decl, ""),
    };
    let head = head.trim_end();
    let split = head.rfind([' ', '*'])?;
    let name = head[split + 1..].trim();
    if name.is_empty() {
        return None;
    }
    let ty = format!("{}{}", head[..=split].trim(), array);
    Some((ty.trim().to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat
ID: 700
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"dfd: 0x%08lx\"
";

    #[test]
    fn parses_syscall_tracepoint() {
        let f = parse_format(OPENAT).expect("format");
        assert_eq!(f.len(), 9);
        assert_eq!(f[6].name, "filename");
        assert!(f[6].is_char_pointer());
        assert_eq!((f[6].offset, f[6].size), (24, 8));
        assert!(f[3].signed);
        assert_eq!(f[0].c_type, "unsigned short");
    }

    #[test]
    fn syscall_args_are_the_8_byte_fields_after_the_number() {
        assert_eq!(syscall_args(&parse_format(OPENAT).expect("format")), 4);
        let sync = OPENAT.lines().take(9).collect::<Vec<_>>().join("\n");
        assert_eq!(syscall_args(&parse_format(&sync).expect("format")), 0);
        // A string copy after the arguments is not one.
        let with_copy = format!(
            "{OPENAT}\tfield:__data_loc char[] __filename_val;\toffset:48;\tsize:4;\tsigned:0;\n"
        );
        assert_eq!(syscall_args(&parse_format(&with_copy).expect("format")), 4);
    }

    #[test]
    fn data_loc_and_arrays() {
        let f = parse_format(
            "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
             \tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;",
        )
        .expect("format");
        assert!(f[0].is_data_loc());
        assert_eq!(f[0].name, "filename");
        assert_eq!(f[1].name, "args");
        assert_eq!(f[1].c_type, "unsigned long[6]");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse_format("field:int x;\toffset:zz;\tsize:4;").is_err());
        assert!(parse_format("nothing here").is_err());
    }
}
