//! The hot path in process, over netlink (rtnetlink): a machine's namespace, its veth pair on
//! the bridge, its addresses and routes, and their removal. No `ip` process is run for them.
//!
//! Namespaces are made as `ip netns add` makes them, so `ip netns` and runc see no
//! difference: a thread unshares its network namespace and bind-mounts it
//! (`/proc/thread-self/ns/net`) onto `/run/netns/<name>`, a directory made a shared mount
//! first (mounts under it then show in every mount namespace that sees it). Removing one
//! unmounts (lazily) and unlinks that file.
//!
//! Inside a namespace, a netlink socket belongs to the namespace of the thread that opened it:
//! each wiring runs on a short-lived thread of its own that opens one socket in the agent's
//! namespace, enters the machine's namespace (setns), opens a second one there, and drives
//! both on a current-thread tokio runtime. That thread ends with the wiring, so no thread of
//! the agent is ever left in a machine's namespace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use super::error::NetError;
use super::host::hint;
use super::plan::GUEST_IFNAME;

/// Where `ip netns` keeps namespace files.
pub const NETNS_DIR: &str = "/run/netns";

/// What a failed netlink step was doing, for the error.
struct Step<'a> {
    target: &'a str,
}

impl Step<'_> {
    fn fail(&self, action: impl Into<String>, message: impl ToString) -> NetError {
        let message = message.to_string();
        NetError::Netlink {
            target: self.target.to_string(),
            action: action.into(),
            hint: hint(&message),
            message,
        }
    }
}

/// Makes the network namespace file `/run/netns/<name>` (as `ip netns add`).
pub fn create_netns(target: &str, path: &Path) -> Result<(), NetError> {
    let step = Step { target };
    let fail = |e: nix::Error| step.fail(format!("create network namespace {}", path.display()), e);
    share_netns_dir().map_err(fail)?;
    // The mount point: a new, empty file (an existing one is another namespace's).
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| step.fail(format!("create network namespace {}", path.display()), e))?;
    let bound = std::thread::scope(|s| {
        s.spawn(|| -> nix::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .join()
        .unwrap_or(Err(nix::Error::EIO))
    });
    if let Err(e) = bound {
        let _ = fs::remove_file(path);
        return Err(fail(e));
    }
    Ok(())
}

/// `/run/netns` exists and is a shared mount (made a mount of itself first if it is none), as
/// iproute2 does it.
fn share_netns_dir() -> nix::Result<()> {
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir).map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(5)))?;
    let share = || {
        mount(
            Some("none"),
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Err(nix::Error::EINVAL) => {
            mount(
                Some(dir),
                dir,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            share()
        }
        other => other,
    }
}

/// Removes a namespace file made by [`create_netns`] or `ip netns add` (the namespace lives on
/// while a process is in it). Idempotent.
pub fn delete_netns(target: &str, path: &Path) -> Result<(), NetError> {
    // Not mounted (EINVAL) or gone (ENOENT): nothing to unmount.
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(
                Step { target }.fail(format!("remove network namespace {}", path.display()), e)
            )
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(Step { target }.fail(format!("remove network namespace {}", path.display()), e))
        }
    }
}

/// What the machine's side of the veth pair gets.
pub struct Guest<'a> {
    pub netns: &'a Path,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub prefix6: u8,
    pub gateway6: Ipv6Addr,
    /// Remove the addresses the interface holds first (it had others).
    pub flush: bool,
}

/// The host's side of the veth pair.
pub struct HostEnd<'a> {
    pub bridge: &'a str,
    pub veth: &'a str,
    /// Its interface group (bridge and organization: the nftables rules read it).
    pub group: u32,
    /// Delete a veth of that name first (its peer was in a namespace that is gone).
    pub delete_first: bool,
    /// Make the pair (else it exists: only made a port of the bridge and brought up).
    pub create: bool,
}

/// Wires a machine: the veth pair (its host end a port of the bridge in the machine's
/// interface group, up; its other end
/// `eth0` in the namespace), then inside the namespace the addresses (IPv6 without duplicate
/// address detection), `eth0` and `lo` up, and default routes via both gateways.
pub fn wire(target: &str, host_end: &HostEnd<'_>, guest: &Guest<'_>) -> Result<(), NetError> {
    let step = Step { target };
    let ns = File::open(guest.netns).map_err(|e| {
        step.fail(
            format!("open network namespace {}", guest.netns.display()),
            e,
        )
    })?;
    on_own_thread(&step, |rt| {
        let host = rt.block_on(async { connection() })?;
        rt.block_on(wire_host(&step, &host, host_end, &ns))?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
            step.fail(
                format!("enter network namespace {}", guest.netns.display()),
                e,
            )
        })?;
        let inside = rt.block_on(async { connection() })?;
        rt.block_on(wire_guest(&step, &inside, guest))
    })
}

/// Deletes a link of the agent's namespace by name (a veth pair goes whole). Idempotent.
pub fn delete_link(target: &str, name: &str) -> Result<(), NetError> {
    let step = Step { target };
    on_own_thread(&step, |rt| {
        rt.block_on(async {
            let handle = connection()?;
            let Some(index) = link_index(&step, &handle, name).await? else {
                return Ok(());
            };
            handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(|e| step.fail(format!("delete link {name}"), e))
        })
    })
}

/// Makes the bridge if it is missing; refuses an interface of its name that is not a bridge.
pub fn ensure_bridge(target: &str, bridge: &str) -> Result<(), NetError> {
    let step = Step { target };
    on_own_thread(&step, |rt| {
        rt.block_on(async {
            let handle = connection()?;
            let mut links = handle.link().get().match_name(bridge.to_string()).execute();
            match links.try_next().await {
                Ok(Some(link)) => {
                    let is_bridge = link.attributes.iter().any(|a| {
                        matches!(a, LinkAttribute::LinkInfo(infos)
                            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
                    });
                    if is_bridge {
                        Ok(())
                    } else {
                        Err(NetError::NotABridge {
                            bridge: bridge.to_string(),
                        })
                    }
                }
                Ok(None) => Err(step.fail(format!("look up link {bridge}"), "no answer")),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                    let message =
                        LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bridge)
                            .name(bridge)
                            .build();
                    handle
                        .link()
                        .add(message)
                        .execute()
                        .await
                        .map_err(|e| step.fail(format!("create bridge {bridge}"), e))
                }
                Err(e) => Err(step.fail(format!("look up link {bridge}"), e)),
            }
        })
    })
}

/// Gives a link of the agent's namespace these addresses (replacing equal ones; IPv6 ones
/// without duplicate address detection) and brings it up.
pub fn add_addresses(target: &str, link: &str, addresses: &[(IpAddr, u8)]) -> Result<(), NetError> {
    let step = Step { target };
    on_own_thread(&step, |rt| {
        rt.block_on(async {
            let handle = connection()?;
            let index = link_index(&step, &handle, link)
                .await?
                .ok_or_else(|| step.fail(format!("find link {link}"), "No such device"))?;
            for (ip, prefix) in addresses {
                add_address(&handle, index, *ip, *prefix)
                    .await
                    .map_err(|e| step.fail(format!("add {ip}/{prefix} to {link}"), e))?;
            }
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| step.fail(format!("bring {link} up"), e))
        })
    })
}

/// Removes an address from a link of the agent's namespace, if the link holds it.
pub fn del_address(target: &str, link: &str, ip: IpAddr) -> Result<(), NetError> {
    let step = Step { target };
    on_own_thread(&step, |rt| {
        rt.block_on(async {
            let handle = connection()?;
            let Some(index) = link_index(&step, &handle, link).await? else {
                return Ok(());
            };
            let held: Vec<_> = handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(ip)
                .execute()
                .try_collect()
                .await
                .map_err(|e| step.fail(format!("list the addresses of {link}"), e))?;
            for address in held {
                handle
                    .address()
                    .del(address)
                    .execute()
                    .await
                    .map_err(|e| step.fail(format!("remove {ip} from {link}"), e))?;
            }
            Ok(())
        })
    })
}

/// Adds (or replaces) an address; IPv6 ones are usable at once, not after a second of
/// duplicate address detection (the plan gives each address once).
async fn add_address(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), rtnetlink::Error> {
    let mut request = handle.address().add(index, ip, prefix).replace();
    if ip.is_ipv6() {
        request.message_mut().header.flags = AddressHeaderFlags::Nodad;
    }
    request.execute().await
}

/// Runs `f` on a new thread (so a setns it does dies with it) with a current-thread runtime.
fn on_own_thread<T: Send>(
    step: &Step<'_>,
    f: impl FnOnce(&tokio::runtime::Runtime) -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| step.fail("start a netlink runtime", e))?;
            f(&rt)
        })
        .join()
        .unwrap_or_else(|_| Err(step.fail("wire the network", "the netlink thread panicked")))
    })
}

/// A netlink connection in the calling thread's namespace; its driver runs on the runtime.
fn connection() -> Result<Handle, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetError::Netlink {
        target: "netlink".into(),
        action: "open a netlink socket".into(),
        hint: hint(&e.to_string()),
        message: e.to_string(),
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of a link by name, `None` when there is none.
async fn link_index(step: &Step<'_>, handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(step.fail(format!("look up link {name}"), e)),
    }
}

async fn wire_host(
    step: &Step<'_>,
    handle: &Handle,
    end: &HostEnd<'_>,
    ns: &File,
) -> Result<(), NetError> {
    let bridge = link_index(step, handle, end.bridge)
        .await?
        .ok_or_else(|| step.fail(format!("find bridge {}", end.bridge), "No such device"))?;
    let veth = end.veth;
    if end.delete_first {
        if let Some(index) = link_index(step, handle, veth).await? {
            handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(|e| step.fail(format!("delete link {veth}"), e))?;
        }
    }
    if end.create {
        let peer: LinkMessage = LinkMessageBuilder::<LinkUnspec>::new()
            .name(GUEST_IFNAME)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        let pair = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(veth)
            .controller(bridge)
            .link_group(end.group)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        handle.link().add(pair).execute().await.map_err(|e| {
            step.fail(
                format!("create veth pair {veth} (peer {GUEST_IFNAME} in the namespace)"),
                e,
            )
        })
    } else {
        let port = LinkUnspec::new_with_name(veth)
            .controller(bridge)
            .link_group(end.group)
            .up()
            .build();
        handle
            .link()
            .set(port)
            .execute()
            .await
            .map_err(|e| step.fail(format!("attach {veth} to bridge {}", end.bridge), e))
    }
}

async fn wire_guest(step: &Step<'_>, handle: &Handle, g: &Guest<'_>) -> Result<(), NetError> {
    let eth0 = link_index(step, handle, GUEST_IFNAME)
        .await?
        .ok_or_else(|| {
            step.fail(
                format!("find {GUEST_IFNAME} in the namespace"),
                "No such device",
            )
        })?;
    let run = |action: String, r: Result<(), rtnetlink::Error>| r.map_err(|e| step.fail(action, e));
    if g.flush {
        let addresses: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(eth0)
            .execute()
            .try_collect()
            .await
            .map_err(|e| step.fail(format!("list the addresses of {GUEST_IFNAME}"), e))?;
        for address in addresses {
            run(
                format!("remove an old address of {GUEST_IFNAME}"),
                handle.address().del(address).execute().await,
            )?;
        }
    }
    for (ip, prefix) in [(IpAddr::from(g.ip), g.prefix), (g.ip6.into(), g.prefix6)] {
        run(
            format!("add {ip}/{prefix} to {GUEST_IFNAME}"),
            add_address(handle, eth0, ip, prefix).await,
        )?;
    }
    for (index, name) in [(eth0, GUEST_IFNAME), (1, "lo")] {
        run(
            format!("bring {name} up"),
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await,
        )?;
    }
    let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(g.gateway)
        .output_interface(eth0)
        .build();
    run(
        format!("route via {}", g.gateway),
        handle.route().add(v4).replace().execute().await,
    )?;
    let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
        .gateway(g.gateway6)
        .output_interface(eth0)
        .build();
    run(
        format!("route via {}", g.gateway6),
        handle.route().add(v6).replace().execute().await,
    )?;
    Ok(())
}
