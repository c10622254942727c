//! Cgroup parsing, planning and writing against a fake cgroup tree in a tempdir.

use super::*;

const MOUNTS: &str = "\
proc /proc proc rw,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,nosuid,net_cls,net_prio 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
/dev/vda /mnt/with\\040space ext4 rw 0 0
";

fn setting(arg: &str) -> CgroupSetting {
    CgroupSetting::parse(arg).unwrap()
}

fn fake_mounts(v1_root: &Path, v2_root: &Path) -> Vec<Mount> {
    let text = format!(
        "cgroup {v1} cgroup rw,pids 0 0\ncgroup2 {v2} cgroup2 rw 0 0\n",
        v1 = v1_root.display(),
        v2 = v2_root.display()
    );
    parse_mounts(&text)
}

#[test]
fn parse_mounts_reads_dirs_types_options_and_escapes() {
    let mounts = parse_mounts(MOUNTS);
    assert_eq!(mounts.len(), 7);
    assert_eq!(mounts[2].dir, PathBuf::from("/sys/fs/cgroup/cpu"));
    assert_eq!(mounts[2].fstype, "cgroup");
    assert_eq!(mounts[2].options, ["rw", "relatime", "cpu"]);
    assert_eq!(mounts[4].options, ["rw", "nosuid", "net_cls", "net_prio"]);
    assert_eq!(mounts[6].dir, PathBuf::from("/mnt/with space"));
    assert!(parse_mounts("short line\n").is_empty());
}

#[test]
fn setting_parse_accepts_controller_files() {
    let s = setting("hugetlb.2MB.max=4194304");
    assert_eq!(
        (s.file.as_str(), s.value.as_str(), s.controller()),
        ("hugetlb.2MB.max", "4194304", "hugetlb")
    );
    assert_eq!(setting("cpu.shares=10").controller(), "cpu");
}

#[test]
fn setting_parse_rejects_malformed_arguments_with_firecrackers_texts() {
    let err = |arg: &str| CgroupSetting::parse(arg).unwrap_err().to_string();
    assert_eq!(err("foo"), "Invalid format for cgroups: foo");
    assert_eq!(err("a=b=c"), "Invalid format for cgroups: a=b=c");
    assert_eq!(err("a.b="), "Invalid format for cgroups: a.b=");
    assert_eq!(err("foo=1"), "Cgroup invalid file: foo");
    assert_eq!(err("../a.b=1"), "Cgroup invalid file: ../a.b=1");
    assert_eq!(err("/a.b=1"), "Cgroup invalid file: /a.b=1");
    assert_eq!(err("x/pids.max=1"), "Cgroup invalid file: x/pids.max=1");
}

#[test]
fn valid_parent_refuses_escapes() {
    assert!(valid_parent(Path::new("firecracker")));
    assert!(valid_parent(Path::new("a/b")));
    assert!(!valid_parent(Path::new("/abs")));
    assert!(!valid_parent(Path::new("a/../b")));
    assert!(!valid_parent(Path::new("./a")));
}

#[test]
fn plan_v1_places_each_controller_in_its_hierarchy() {
    let mounts = parse_mounts(MOUNTS);
    let settings = [
        setting("cpu.shares=10"),
        setting("net_prio.ifpriomap=eth0 1"),
    ];
    let plan = plan(1, &settings, &mounts, Path::new("firecracker"), "vm1").unwrap();
    assert_eq!(
        plan[0].location,
        PathBuf::from("/sys/fs/cgroup/cpu/firecracker/vm1")
    );
    assert_eq!(plan[0].hierarchy, PathBuf::from("/sys/fs/cgroup/cpu"));
    assert_eq!(
        plan[1].location,
        PathBuf::from("/sys/fs/cgroup/net_cls,net_prio/firecracker/vm1")
    );
    let err = super::plan(1, &[setting("nosuch.x=1")], &mounts, Path::new("p"), "vm1").unwrap_err();
    assert_eq!(err.to_string(), "Controller nosuch is unavailable");
}

#[test]
fn plan_v2_needs_a_cgroup2_mount_and_an_available_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = tmp.path().join("unified");
    fs::create_dir(&v2).unwrap();
    fs::write(v2.join("cgroup.controllers"), "cpu hugetlb pids\n").unwrap();
    let mounts = fake_mounts(&tmp.path().join("v1"), &v2);

    let plan = plan(2, &[setting("pids.max=5")], &mounts, Path::new("a/b"), "vm").unwrap();
    assert_eq!(plan[0].location, v2.join("a/b/vm"));
    assert_eq!(plan[0].version, 2);

    let err =
        super::plan(2, &[setting("memory.max=1")], &mounts, Path::new("a"), "vm").unwrap_err();
    assert_eq!(err.to_string(), "Controller memory is unavailable");
    let err = super::plan(
        2,
        &[setting("pids.max=1")],
        &mounts[..1],
        Path::new("a"),
        "vm",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Hierarchy not found: No hierarchy found for this cgroup version."
    );
    let err = super::plan(3, &[setting("pids.max=1")], &mounts, Path::new("a"), "vm").unwrap_err();
    assert!(matches!(err, JailerError::CgroupHierarchyMissing(_)));
}

#[test]
fn v1_write_inherits_from_nearest_non_empty_ancestor_then_writes_value() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cpuset");
    fs::create_dir_all(root.join("parent")).unwrap();
    fs::write(root.join("cpuset.cpus"), "0-3\n").unwrap();
    fs::write(root.join("parent/cpuset.cpus"), "").unwrap();
    // A real cgroup directory gets its files from the kernel; the fake one needs the parent's.
    let cg = Cgroup {
        version: 1,
        controller: "cpuset".into(),
        file: "cpuset.cpus".into(),
        value: "1".into(),
        hierarchy: root.clone(),
        location: root.join("parent/vm"),
    };
    let mut undo = Undo::default();
    cg.write_value(&mut undo).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("parent/cpuset.cpus")).unwrap(),
        "0-3\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("parent/vm/cpuset.cpus")).unwrap(),
        "1\n"
    );
    cg.attach(4242).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("parent/vm/tasks")).unwrap(),
        "4242\n"
    );

    // cgroupfs lets rmdir drop its control files; the fake tree needs them removed first.
    for file in ["cpuset.cpus", "tasks"] {
        fs::remove_file(root.join("parent/vm").join(file)).unwrap();
    }
    undo.roll_back();
    assert!(
        !root.join("parent/vm").exists(),
        "the created cgroup is removed"
    );
    assert!(root.join("parent").exists(), "the existing parent stays");
}

#[test]
fn v1_write_fails_when_no_ancestor_has_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cpuset");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("cpuset.mems"), "").unwrap();
    let cg = Cgroup {
        version: 1,
        controller: "cpuset".into(),
        file: "cpuset.mems".into(),
        value: "0".into(),
        hierarchy: root.clone(),
        location: root.join("p/vm"),
    };
    fs::create_dir_all(root.join("p")).unwrap();
    fs::write(root.join("p/cpuset.mems"), "").unwrap();
    let err = cg.write_value(&mut Undo::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Failed to inherit cgroups configurations from file cpuset.mems in path {}",
            root.join("p/vm").display()
        )
    );
}

#[test]
fn v2_write_enables_controller_from_root_down_to_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("unified");
    fs::create_dir_all(root.join("a/b")).unwrap();
    for dir in ["", "a", "a/b"] {
        fs::write(root.join(dir).join("cgroup.subtree_control"), "").unwrap();
    }
    let cg = Cgroup {
        version: 2,
        controller: "pids".into(),
        file: "pids.max".into(),
        value: "7".into(),
        hierarchy: root.clone(),
        location: root.join("a/b/vm"),
    };
    cg.write_value(&mut Undo::default()).unwrap();
    for dir in ["", "a", "a/b"] {
        let control = fs::read_to_string(root.join(dir).join("cgroup.subtree_control")).unwrap();
        assert_eq!(control, "+pids\n", "{dir}");
    }
    assert!(
        !root.join("a/b/vm/cgroup.subtree_control").exists(),
        "not enabled below the jail"
    );
    assert_eq!(
        fs::read_to_string(root.join("a/b/vm/pids.max")).unwrap(),
        "7\n"
    );
    cg.attach(17).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("a/b/vm/cgroup.procs")).unwrap(),
        "17\n"
    );
    cg.leave(17);
    assert_eq!(
        fs::read_to_string(root.join("cgroup.procs")).unwrap(),
        "17\n",
        "back at the root"
    );
}

#[test]
fn v2_hierarchy_is_the_first_cgroup2_mount() {
    let mounts = parse_mounts(MOUNTS);
    assert_eq!(
        v2_hierarchy(&mounts).unwrap(),
        PathBuf::from("/sys/fs/cgroup/unified")
    );
    assert!(v2_hierarchy(&mounts[..2]).is_err());
}
