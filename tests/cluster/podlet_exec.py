"""Starts one container of the pod runner (podlet.py), inside the mount namespace `unshare`
made for it: bind-mounts the pod's volumes at their paths, makes the root filesystem
read-only when the container asks for it, drops to the container's user, then execs the
container's command with exactly its environment.

    unshare --mount --propagation private -- python3 podlet_exec.py PLAN.json
"""

import json
import os
import subprocess
import sys


def mount(*args: str, fds: tuple[int, ...] = ()) -> None:
    subprocess.run(["mount", *args], check=True, pass_fds=fds)


def main() -> None:
    with open(sys.argv[1]) as file:
        plan = json.load(file)
    # Every source, the binary and the preloaded library are opened before the first mount: a
    # volume mounted at /tmp would otherwise hide whatever of them lives under /tmp.
    sources = [os.open(item["source"], os.O_PATH) for item in plan["mounts"]]
    binary = os.open(plan["argv"][0], os.O_RDONLY)
    preload = os.open(plan["env"]["LD_PRELOAD"], os.O_RDONLY)
    os.set_inheritable(preload, True)
    plan["env"]["LD_PRELOAD"] = f"/proc/self/fd/{preload}"
    for item, source in zip(plan["mounts"], sources):
        target = item["target"]
        if os.path.isdir(f"/proc/self/fd/{source}"):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        mount("--bind", f"/proc/self/fd/{source}", target, fds=(source,))
        if item["readOnly"]:
            mount("-o", "remount,bind,ro", target)
    if plan["readOnlyRoot"]:
        mount("-o", "remount,bind,ro", "/")
    if plan["gid"] is not None:
        os.setgroups(plan["groups"])
        os.setgid(plan["gid"])
    if plan["uid"] is not None:
        os.setuid(plan["uid"])
    os.chdir(plan["workingDir"])
    os.execve(binary, plan["argv"], plan["env"])


if __name__ == "__main__":
    main()
