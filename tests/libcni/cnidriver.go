// cnidriver drives CNI plugins through libcni, the library containerd and CRI-O use,
// so the test-suite can check pycni against the real client.
//
//	cnidriver -bin DIR -cache DIR -conf FILE [-netns PATH -id ID -ifname IF -args K=V;.. -caps JSON] add|check|del|validate|version TYPE
//
// It prints the result (add), the plugin types (validate) or the version info (version) as JSON.
// On failure it prints {"error": msg, "code": n} and exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func fail(err error) {
	out := map[string]interface{}{"error": err.Error(), "code": 0}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out["code"] = cniErr.Code
		out["error"] = cniErr.Msg
		out["details"] = cniErr.Details
	}
	json.NewEncoder(os.Stdout).Encode(out)
	os.Exit(1)
}

func emit(v interface{}) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fail(err)
	}
}

func main() {
	binDir := flag.String("bin", "/opt/cni/bin", "plugin directories, ':'-separated")
	cacheDir := flag.String("cache", "/var/lib/cni", "libcni cache directory")
	confFile := flag.String("conf", "", "a .conflist or .conf file")
	netns := flag.String("netns", "", "network namespace path")
	containerID := flag.String("id", "", "container ID")
	ifName := flag.String("ifname", "eth0", "interface name")
	cniArgs := flag.String("args", "", "CNI_ARGS as K=V;K=V")
	caps := flag.String("caps", "", "capability args as a JSON object")
	flag.Parse()
	if flag.NArg() < 1 {
		fail(fmt.Errorf("usage: cnidriver [flags] add|check|del|validate|version TYPE"))
	}
	ctx := context.Background()
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(*binDir, ":"), *cacheDir, nil)

	if flag.Arg(0) == "version" {
		info, err := cni.GetVersionInfo(ctx, flag.Arg(1))
		if err != nil {
			fail(err)
		}
		emit(map[string]interface{}{"supportedVersions": info.SupportedVersions()})
		return
	}

	var list *libcni.NetworkConfigList
	var err error
	if strings.HasSuffix(*confFile, ".conflist") {
		list, err = libcni.ConfListFromFile(*confFile)
	} else {
		var conf *libcni.NetworkConfig
		conf, err = libcni.ConfFromFile(*confFile)
		if err == nil {
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		fail(err)
	}

	rt := &libcni.RuntimeConf{ContainerID: *containerID, NetNS: *netns, IfName: *ifName}
	for _, pair := range strings.Split(*cniArgs, ";") {
		if kv := strings.SplitN(pair, "=", 2); len(kv) == 2 {
			rt.Args = append(rt.Args, [2]string{kv[0], kv[1]})
		}
	}
	if *caps != "" {
		if err := json.Unmarshal([]byte(*caps), &rt.CapabilityArgs); err != nil {
			fail(err)
		}
	}

	switch flag.Arg(0) {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		emit(res)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		emit(map[string]string{"check": "ok"})
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		emit(map[string]string{"del": "ok"})
	case "validate":
		types, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		emit(map[string]interface{}{"types": types})
	default:
		fail(fmt.Errorf("unknown verb %q", flag.Arg(0)))
	}
}
