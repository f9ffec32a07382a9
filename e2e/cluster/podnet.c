// The pod network of the cluster test's pod runner, preloaded into each container process.
//
// On a real node every pod has a network namespace of its own: a container listening on
// 0.0.0.0 is reachable at the pod IP, and 127.0.0.1 reaches only the pod's own containers.
// The runner starts containers as plain processes in one network namespace, each pod with an
// address of its own (HEARTH_POD_IP, e.g. 10.244.0.7), so this library gives them the same view:
// - bind() to 0.0.0.0 or 127.0.0.1 binds the pod IP instead;
// - connect() to 127.0.0.1 on one of the pod's own ports (HEARTH_POD_PORTS, comma-separated)
//   goes to the pod IP, so one container reaches its neighbour as it would through localhost.
// Everything else passes through unchanged. Two pods can then both listen on port 8001.
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

static int is_pod_port(in_port_t port) {
  const char *ports = getenv("HEARTH_POD_PORTS");
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

// A copy of an IPv4 `addr` with its address replaced by the pod IP where the pod network says so.
static const struct sockaddr *redirected(const struct sockaddr *addr, socklen_t len,
                                         struct sockaddr_in *copy, int for_bind) {
  struct in_addr pod;
  if (addr == NULL || addr->sa_family != AF_INET || len < sizeof *copy || !pod_address(&pod)) return addr;
  memcpy(copy, addr, sizeof *copy);
  in_addr_t target = ntohl(copy->sin_addr.s_addr);
  int any = target == INADDR_ANY, loopback = target == INADDR_LOOPBACK;
  if ((for_bind && (any || loopback)) || (!for_bind && loopback && is_pod_port(copy->sin_port))) {
    copy->sin_addr = pod;
    return (const struct sockaddr *)copy;
  }
  return addr;
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
