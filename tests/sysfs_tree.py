"""A sysfs tree of PCI devices for nodes (and test machines) that have none: the tests and the device plugin
benchmark lay one out, and point `--sysfs-root` at it; the netdevs it names are real links."""

import os


class FakeSysfs:
    """A sysfs tree of PCI functions and auxiliary devices, laid out as the kernel lays out /sys: attribute
    files, and symlinks for `driver`, `physfn`, `virtfnN` and `iommu_group`."""

    def __init__(self, root):
        self.root = root
        (root / "bus" / "pci" / "devices").mkdir(parents=True, exist_ok=True)

    def device_dir(self, address):
        return self.root / "bus" / "pci" / "devices" / address

    def pci(self, address, vendor="8086", device="1592", pci_class="0x020000", driver="", netdevs=(), numa_node=0,
            iommu_group="", pf="", acpi_index="", rdma=(), rdma_nodes=()):
        base = self.device_dir(address)
        base.mkdir(parents=True)
        for name, value in (("vendor", f"0x{vendor}"), ("device", f"0x{device}"), ("class", pci_class),
                            ("numa_node", str(numa_node))):
            (base / name).write_text(value + "\n")
        if acpi_index:
            (base / "acpi_index").write_text(acpi_index + "\n")
        self.bind(address, driver)
        (base / "net").mkdir()
        for name in netdevs:
            (base / "net" / name).mkdir()
        if iommu_group:
            group = self.root / "kernel" / "iommu_groups" / iommu_group
            group.mkdir(parents=True, exist_ok=True)
            (base / "iommu_group").symlink_to(group)
        if pf:
            (base / "physfn").symlink_to(f"../{pf}")
            pf_dir = self.device_dir(pf)
            index = len([n for n in os.listdir(pf_dir) if n.startswith("virtfn")])
            (pf_dir / f"virtfn{index}").symlink_to(f"../{address}")
            (pf_dir / "sriov_numvfs").write_text(f"{index + 1}\n")
        for name in rdma:
            (base / "infiniband" / name).mkdir(parents=True)
        for node in rdma_nodes:  # e.g. infiniband_verbs/uverbs0
            (base / node).mkdir(parents=True)
        return base

    def bind(self, address, driver):
        link = self.device_dir(address) / "driver"
        if link.is_symlink():
            link.unlink()
        if driver:
            target = self.root / "bus" / "pci" / "drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)

    def remove_vf(self, pf, address):
        pf_dir = self.device_dir(pf)
        for name in os.listdir(pf_dir):
            if name.startswith("virtfn") and os.readlink(pf_dir / name) == f"../{address}":
                (pf_dir / name).unlink()
        (pf_dir / "sriov_numvfs").write_text(f"{len([n for n in os.listdir(pf_dir) if n.startswith('virtfn')])}\n")
        for entry in sorted(self.device_dir(address).rglob("*"), reverse=True):
            entry.unlink() if entry.is_symlink() or entry.is_file() else entry.rmdir()
        self.device_dir(address).rmdir()

    def auxiliary(self, name, parent, netdevs=(), driver=""):
        base = self.device_dir(parent) / name
        (base / "net").mkdir(parents=True)
        for netdev in netdevs:
            (base / "net" / netdev).mkdir()
        if driver:
            target = self.root / "bus" / "auxiliary" / "drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            (base / "driver").symlink_to(target)
        bus = self.root / "bus" / "auxiliary" / "devices"
        bus.mkdir(parents=True, exist_ok=True)
        (bus / name).symlink_to(base)


class DevTree:
    """A /dev of the test's own (the device plugin's `--dev-root`) and the USB side of a sysfs tree: character
    nodes made with mknod (the null device's numbers: nothing opens them), USB devices as the kernel lists
    them under /sys/bus/usb/devices with their node under bus/usb."""

    def __init__(self, root, sysfs_root=None):
        self.root = root
        self.sysfs_root = sysfs_root
        root.mkdir(parents=True, exist_ok=True)

    def node(self, relative):
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # S_IFCHR
        return path

    def remove(self, relative):
        (self.root / relative).unlink()

    def usb(self, name, vendor, product, bus, number, serial="", node=True):
        device = self.sysfs_root / "bus" / "usb" / "devices" / name
        device.mkdir(parents=True)
        for key, value in (("idVendor", vendor), ("idProduct", product), ("busnum", str(bus)),
                           ("devnum", str(number))) + ((("serial", serial),) if serial else ()):
            (device / key).write_text(value + "\n")
        interface = self.sysfs_root / "bus" / "usb" / "devices" / f"{name}:1.0"  # no IDs of its own: skipped
        interface.mkdir()
        (interface / "bInterfaceClass").write_text("ff\n")
        if node:
            self.node(f"bus/usb/{bus:03d}/{number:03d}")

    def unplug_usb(self, name, bus, number):
        import shutil

        shutil.rmtree(self.sysfs_root / "bus" / "usb" / "devices" / name)
        shutil.rmtree(self.sysfs_root / "bus" / "usb" / "devices" / f"{name}:1.0")
        self.remove(f"bus/usb/{bus:03d}/{number:03d}")
