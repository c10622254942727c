//! The custom CPU template language: numbers, bitmaps, capabilities and registers, with
//! Firecracker's error texts, and the round trip through serialisation.

use super::*;

fn parse(json: &str) -> Result<CpuConfig, String> {
    serde_json::from_str::<CpuConfig>(json).map_err(|e| e.to_string())
}

/// A template with one CPUID modifier of `bitmap` on leaf 1 EAX.
fn cpuid_bitmap(bitmap: &str) -> Result<RegisterBitmap<u32>, String> {
    let json = format!(
        r#"{{"cpuid_modifiers":[{{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{{"register":"eax","bitmap":"{bitmap}"}}]}}]}}"#
    );
    parse(&json).map(|c| c.cpuid_modifiers[0].modifiers[0].bitmap)
}

/// A template with one MSR modifier of `bitmap` on MSR 0x10.
fn msr_bitmap(bitmap: &str) -> Result<RegisterBitmap<u64>, String> {
    parse(&format!(
        r#"{{"msr_modifiers":[{{"addr":"0x10","bitmap":"{bitmap}"}}]}}"#
    ))
    .map(|c| c.msr_modifiers[0].bitmap)
}

fn bits<T>(filter: T, value: T) -> RegisterBitmap<T> {
    RegisterBitmap { filter, value }
}

#[test]
fn a_bitmap_is_right_aligned_and_its_missing_high_bits_are_x() {
    assert_eq!(cpuid_bitmap("0b1x0"), Ok(bits(0b101, 0b100)));
    assert_eq!(cpuid_bitmap("0b0000_xxxx"), Ok(bits(0xf0, 0)));
    assert_eq!(cpuid_bitmap("0b"), Ok(bits(0, 0)));
    assert_eq!(cpuid_bitmap(""), Ok(bits(0, 0)));
    // The prefix is optional, as in Firecracker: what follows is read the same way.
    assert_eq!(cpuid_bitmap("10"), Ok(bits(0b11, 0b10)));
    let all_ones = format!("0b{}", "1".repeat(32));
    assert_eq!(cpuid_bitmap(&all_ones), Ok(bits(u32::MAX, u32::MAX)));
    let msr = format!("0b1{}", "x".repeat(63));
    assert_eq!(msr_bitmap(&msr), Ok(bits(1 << 63, 1 << 63)));
}

#[test]
fn a_bitmap_longer_than_its_register_is_refused() {
    let ones = "1".repeat(32);
    // Underscores count once every bit is read: a trailing one is fine, a leading one not.
    assert_eq!(
        cpuid_bitmap(&format!("0b{ones}_")),
        Ok(bits(u32::MAX, u32::MAX))
    );
    for too_long in [format!("1{ones}"), format!("_{ones}"), format!("2{ones}")] {
        let err = cpuid_bitmap(&too_long).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Failed to parse string [{too_long}] as a bitmap - string is too long at line 1"
            )),
            "{err}"
        );
    }
    let err = msr_bitmap(&"1".repeat(65)).unwrap_err();
    assert!(err.contains("as a bitmap - string is too long"), "{err}");
}

#[test]
fn an_unknown_bitmap_character_is_named_by_its_byte_value() {
    for (bitmap, byte) in [
        ("0b1x2", 50),
        ("0b1X", 88),
        ("0B1", 66),
        ("0b0b1", 98),
        ("1é", 169),
    ] {
        let err = cpuid_bitmap(bitmap).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Failed to parse string [{bitmap}] as a bitmap - unknown character: {byte} at"
            )),
            "{err}"
        );
    }
}

#[test]
fn numbers_need_a_hexadecimal_or_binary_prefix() {
    let leaf = |leaf: &str| {
        parse(&format!(
            r#"{{"cpuid_modifiers":[{{"leaf":"{leaf}","subleaf":"0b11","flags":1,"modifiers":[]}}]}}"#
        ))
    };
    let config = leaf("0x8000001f").unwrap();
    assert_eq!(
        (
            config.cpuid_modifiers[0].leaf,
            config.cpuid_modifiers[0].subleaf
        ),
        (0x8000_001f, 3)
    );
    assert!(leaf("1").unwrap_err().starts_with(
        "No supported number system prefix found in value [1]. Make sure to prefix the number \
         with '0x' for hexadecimal numbers or '0b' for binary numbers. at line 1"
    ));
    assert!(leaf("0X1").unwrap_err().contains("value [0X1]"));
    for (text, kind) in [
        ("0x", "Empty"),
        ("0b2", "InvalidDigit"),
        ("0x1_0", "InvalidDigit"),
        ("0x100000000", "PosOverflow"),
    ] {
        let err = leaf(text).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Failed to parse string [{text}] as a number for CPU template - ParseIntError {{ kind: {kind} }}"
            )),
            "{err}"
        );
    }
}

#[test]
fn capabilities_are_decimal_with_an_optional_bang() {
    let config = parse(r#"{"kvm_capabilities":["121","!56","+7"]}"#).unwrap();
    assert_eq!(
        config.kvm_capabilities,
        vec![
            KvmCapability::Add(121),
            KvmCapability::Remove(56),
            KvmCapability::Add(7)
        ]
    );
    for (cap, why) in [
        ("x", "invalid digit found in string"),
        ("0x10", "invalid digit found in string"),
        ("!", "cannot parse integer from empty string"),
        ("4294967296", "number too large to fit in target type"),
    ] {
        let err = parse(&format!(r#"{{"kvm_capabilities":["{cap}"]}}"#)).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Failed to parse string [{cap}] as a kvm capability - can not convert to numeric: {why} at"
            )),
            "{err}"
        );
    }
}

#[test]
fn registers_are_lowercase_names() {
    let with_register = |register: &str| {
        parse(&format!(
            r#"{{"cpuid_modifiers":[{{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{{"register":"{register}","bitmap":"0b1"}}]}}]}}"#
        ))
    };
    assert_eq!(
        with_register("edx").unwrap().cpuid_modifiers[0].modifiers[0].register,
        CpuidRegister::Edx
    );
    for bad in ["EAX", "eex"] {
        assert!(with_register(bad)
            .unwrap_err()
            .starts_with("Invalid CPUID register. Must be one of [eax, ebx, ecx, edx] at"));
    }
}

#[test]
fn unknown_fields_are_refused_at_the_top_only() {
    // As in Firecracker: the template denies unknown fields, its modifiers do not.
    assert!(parse(r#"{"reg_modifiers":[]}"#)
        .unwrap_err()
        .starts_with("unknown field `reg_modifiers`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers`"));
    assert!(parse(r#"{"msr_modifiers":[{"addr":"0x1","bitmap":"0b1","note":2}]}"#).is_ok());
    assert!(
        parse(r#"{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","modifiers":[]}]}"#)
            .unwrap_err()
            .starts_with("missing field `flags`")
    );
    assert!(parse(
        r#"{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":-1,"modifiers":[]}]}"#
    )
    .unwrap_err()
    .starts_with("invalid value: integer `-1`, expected u32"));
    assert_eq!(parse("{}"), Ok(CpuConfig::default()));
}

#[test]
fn a_template_serialises_into_the_language_it_was_read_from() {
    let json = r#"{"kvm_capabilities":["121","!56"],
        "cpuid_modifiers":[{"leaf":"0x80000001","subleaf":"0b0","flags":1,
            "modifiers":[{"register":"ecx","bitmap":"0b1_0x"}]}],
        "msr_modifiers":[{"addr":"0x10a","bitmap":"0b0"}]}"#;
    let config = parse(json).unwrap();
    let value = serde_json::to_value(&config).unwrap();
    assert_eq!(value["kvm_capabilities"], serde_json::json!(["121", "!56"]));
    assert_eq!(value["cpuid_modifiers"][0]["leaf"], "0x80000001");
    assert_eq!(value["cpuid_modifiers"][0]["subleaf"], "0x0");
    assert_eq!(value["cpuid_modifiers"][0]["flags"], 1);
    assert_eq!(
        value["cpuid_modifiers"][0]["modifiers"][0]["bitmap"],
        format!("0b{}10x", "x".repeat(29))
    );
    assert_eq!(
        value["msr_modifiers"][0]["bitmap"],
        format!("0b{}0", "x".repeat(63))
    );
    let again: CpuConfig = serde_json::from_value(value).unwrap();
    assert_eq!(again, config);
}

proptest::proptest! {
    #[test]
    fn every_bitmap_reads_back_as_written(filter: u64, value: u64) {
        let bits = RegisterBitmap { filter, value: value & filter };
        let text = serde_json::to_value(bits).unwrap();
        let again: RegisterBitmap<u64> = serde_json::from_value(text).unwrap();
        proptest::prop_assert_eq!(again, bits);
    }

    #[test]
    fn any_string_is_a_fitting_bitmap_or_an_error(text in "(0b)?[01x_2é]{0,40}") {
        if let Ok((filter, value)) = parse_bitmap(&text, 32) {
            proptest::prop_assert!(filter >> 32 == 0 && value & !filter == 0, "{text}");
        }
    }
}
