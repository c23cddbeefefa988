//! Object paths: validated before any database or filesystem access. Traversal
//! (`..`, `.` segments), absolute paths, drive letters, UNC paths, backslashes, NUL
//! and control characters are refused; Unicode names are accepted and NFC-normalised,
//! so one name has one spelling.

use unicode_normalization::UnicodeNormalization;

/// Why a path was refused (400). The checks apply to the NFC form, the spelling that
/// is stored: `\u{212A}:` (KELVIN SIGN) normalises to the drive letter `K:`.
pub fn check(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("object path is empty".into());
    }
    if raw.len() > 1024 {
        return Err("object path is longer than 1024 bytes".into());
    }
    let path: String = raw.nfc().collect();
    if path.len() > 1024 {
        return Err("object path is longer than 1024 bytes".into());
    }
    if path.chars().any(|c| c.is_control()) {
        return Err("object path contains control characters".into());
    }
    if path.contains('\\') {
        return Err("object path contains a backslash".into());
    }
    if path.starts_with('/') {
        return Err("object path is absolute".into());
    }
    let b = path.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Err("object path starts with a drive letter".into());
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return Err("object path has an empty segment".into());
        }
        if seg == "." || seg == ".." || seg.trim_end_matches([' ', '.']).is_empty() {
            return Err("object path traverses directories".into());
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_unicode_names() {
        for ok in ["a.png", "users/123/photo.png", "résumé.pdf", "日本/ファイル.txt", "a b/c-d_e.f", "..hidden.txt", "v1.2/file"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        // Decomposed é (e + U+0301) becomes the composed form.
        assert_eq!(check("re\u{301}sume\u{301}.pdf").unwrap(), "résumé.pdf");
    }

    #[test]
    fn checks_apply_to_the_normalised_form() {
        // KELVIN SIGN is canonically K: found by the fuzz harness (storage_paths).
        assert!(check("\u{212a}:").is_err());
        assert!(check("\u{212a}:/x.png").is_err());
        assert_eq!(check("\u{212a}elvin.txt").unwrap(), "Kelvin.txt");
    }
}
