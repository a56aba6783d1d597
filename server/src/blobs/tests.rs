//! The pure rules of blobs: ids, types, names, signatures. The whole flow (uploads,
//! resume, authorization, the collector) is tested over real sockets in tests/blobs.rs.

use super::*;

#[test]
fn blob_ids_are_64_lowercase_hex_digits() {
    let id = hex(&[0xab; 32]);
    assert_eq!(id.len(), 64);
    assert!(check_id(&id, "blob").is_ok());
    for bad in [
        "",
        "ab",
        &id.to_uppercase(),
        &format!("{}g", &id[..63]),
        &format!("{id}0"),
        "../../../../etc/passwd",
    ] {
        assert!(check_id(bad, "blob").is_err(), "{bad:?}");
    }
}

#[test]
fn types_are_type_slash_subtype_tokens() {
    for ok in [
        "image/png",
        "application/pdf",
        "application/vnd.ms-excel",
        "a/b+c",
    ] {
        assert!(check_mime(ok).is_ok(), "{ok}");
    }
    let long = format!("a/{}", "b".repeat(126));
    for bad in [
        "",
        "image",
        "/png",
        "image/",
        "text/html; charset=utf-8",
        "a b/c",
        &long,
    ] {
        assert!(check_mime(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn attachment_names_have_no_paths_or_control_characters() {
    assert!(check_name("holiday photo.png").is_ok());
    assert!(check_name("").is_ok(), "a name is optional");
    assert!(check_name("报告.pdf").is_ok());
    for bad in ["a/b", "../x", "line\nbreak", "nul\0", &"x".repeat(256)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn hex_round_trips_and_bad_hex_is_none() {
    let b: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(&hex(&b)).unwrap(), b);
    assert_eq!(unhex("abc"), None);
    assert_eq!(unhex("zz"), None);
    assert_eq!(unhex(""), Some(vec![]));
}

#[test]
fn only_the_four_decoded_types_count_as_images() {
    for m in ["image/png", "image/jpeg", "image/gif", "image/webp"] {
        assert!(is_inspected_image(m));
    }
    for m in ["image/svg+xml", "image/bmp", "text/html", "application/pdf"] {
        assert!(!is_inspected_image(m), "{m}");
    }
}
