// The pod network of the cluster test's pod runner, preloaded into each container process.
//
// On a real node every pod has a network namespace of its own: a container listening on
// 0.0.0.0 is reachable at the pod IP, and 127.0.0.1 reaches only the pod's own containers.
// The runner starts containers as plain processes in one network namespace, each pod with an
// address of its own (HEARTH_POD_IP, e.g. 10.244.0.7) and a loopback address of its own
// (HEARTH_POD_LOOPBACK, e.g. 127.244.0.7), so this library gives them the same view:
// - bind() to 0.0.0.0 binds the pod IP; bind() to 127.0.0.1 binds the pod's loopback address,
//   which only the pod's own containers reach;
// - connect() to 127.0.0.1 on one of the pod's declared ports (HEARTH_POD_PORTS, comma-separated)
//   goes to the pod IP, so one container reaches its neighbour as it would through localhost;
//   on a port of the host (HEARTH_HOST_PORTS: the API server's) it is left alone; on any other
//   port it goes to the pod's loopback address.
// Everything else passes through unchanged. Two pods can then both listen on port 8001, and a
// port a container binds to 127.0.0.1 is out of reach of every other pod, as on a real node.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int pod_address(struct in_addr *out) {
  const char *ip = getenv("HEARTH_POD_IP");
  return ip != NULL && inet_pton(AF_INET, ip, out) == 1;
}

static int pod_loopback(struct in_addr *out) {
  const char *ip = getenv("HEARTH_POD_LOOPBACK");
  return ip != NULL && inet_pton(AF_INET, ip, out) == 1;
}

static int is_listed_port(const char *variable, in_port_t port) {
  const char *ports = getenv(variable);
  if (ports == NULL) return 0;
  char buffer[512];
  strncpy(buffer, ports, sizeof buffer - 1);
  buffer[sizeof buffer - 1] = '\0';
  char *saved = NULL;
  for (char *item = strtok_r(buffer, ",", &saved); item != NULL; item = strtok_r(NULL, ",", &saved)) {
    if (atoi(item) == ntohs(port)) return 1;
  }
  return 0;
}

// A copy of an IPv4 `addr` with its address replaced where the pod network says so.
static const struct sockaddr *redirected(const struct sockaddr *addr, socklen_t len,
                                         struct sockaddr_in *copy, int for_bind) {
  struct in_addr pod, local;
  if (addr == NULL || addr->sa_family != AF_INET || len < sizeof *copy || !pod_address(&pod)) return addr;
  int has_local = pod_loopback(&local);
  memcpy(copy, addr, sizeof *copy);
  in_addr_t target = ntohl(copy->sin_addr.s_addr);
  if (for_bind && target == INADDR_ANY) {
    copy->sin_addr = pod;
  } else if (target != INADDR_LOOPBACK) {
    return addr;
  } else if (for_bind) {
    copy->sin_addr = has_local ? local : pod;
  } else if (is_listed_port("HEARTH_POD_PORTS", copy->sin_port)) {
    copy->sin_addr = pod;
  } else if (has_local && !is_listed_port("HEARTH_HOST_PORTS", copy->sin_port)) {
    copy->sin_addr = local;
  } else {
    return addr;
  }
  return (const struct sockaddr *)copy;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real_bind)(int, const struct sockaddr *, socklen_t);
  if (real_bind == NULL) real_bind = dlsym(RTLD_NEXT, "bind");
  struct sockaddr_in copy;
  return real_bind(fd, redirected(addr, len, &copy, 1), len);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real_connect)(int, const struct sockaddr *, socklen_t);
  if (real_connect == NULL) real_connect = dlsym(RTLD_NEXT, "connect");
  struct sockaddr_in copy;
  return real_connect(fd, redirected(addr, len, &copy, 0), len);
}
