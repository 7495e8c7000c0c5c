//! Rules for `runink.Slice` and the pipe settings a `runink.Pipeline` passes on to its slices.

use crate::runink::Slice;

use super::Invalid;

/// The largest pipe buffer a slice may ask for. Linux lets a privileged process go up to its
/// page budget; this bound keeps one slice from pinning more than this much kernel memory per
/// pipe.
pub const MAX_PIPE_BUFFER_BYTES: u64 = 64 << 20;

/// A slice's pipes are names inside the node's pipe directory for the slice's namespace, never
/// paths: the workload opens them before it drops privileges.
pub fn validate(slice: &Slice) -> Result<(), Invalid> {
    pipe_name("stdin_pipe", &slice.stdin_pipe)?;
    pipe_name("stdout_pipe", &slice.stdout_pipe)?;
    pipe_buffer("pipe_buffer_bytes", slice.pipe_buffer_bytes)
}

/// `bytes` (zero: the default) is at most [`MAX_PIPE_BUFFER_BYTES`].
pub fn pipe_buffer(field: &str, bytes: u64) -> Result<(), Invalid> {
    if bytes > MAX_PIPE_BUFFER_BYTES {
        return Err(Invalid::new(
            field,
            format!(
                "{bytes} bytes is more than the largest pipe buffer, {MAX_PIPE_BUFFER_BYTES} (64 MiB)"
            ),
        ));
    }
    Ok(())
}

fn pipe_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() {
        return Ok(());
    }
    let problem = if name == "." || name == ".." {
        Some("is not a name")
    } else if name.contains('/') {
        Some("must be a name in the node's pipe directory, not a path (no '/')")
    } else if name.len() > 255 {
        Some("is longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Invalid::new(field, format!("{name:?} {problem}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_names_not_paths() {
        for (field, bad) in [
            ("stdin_pipe", "/etc/shadow"),
            ("stdout_pipe", "../x"),
            ("stdin_pipe", ".."),
        ] {
            let mut slice = Slice::default();
            match field {
                "stdin_pipe" => slice.stdin_pipe = bad.into(),
                _ => slice.stdout_pipe = bad.into(),
            }
            let err = validate(&slice).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.problem.contains(bad), "{err}");
        }
        let ok = Slice {
            stdin_pipe: "p_gen".into(),
            stdout_pipe: "p_pass".into(),
            pipe_buffer_bytes: 1 << 20,
            ..Default::default()
        };
        assert_eq!(validate(&ok), Ok(()));
    }

    #[test]
    fn pipe_buffer_is_bounded() {
        let slice = Slice {
            pipe_buffer_bytes: MAX_PIPE_BUFFER_BYTES + 1,
            ..Default::default()
        };
        assert_eq!(
            validate(&slice).unwrap_err().to_string(),
            "pipe_buffer_bytes: 67108865 bytes is more than the largest pipe buffer, 67108864 (64 MiB)"
        );
        assert_eq!(pipe_buffer("f", MAX_PIPE_BUFFER_BYTES), Ok(()));
    }
}
