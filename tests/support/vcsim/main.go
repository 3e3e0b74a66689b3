// vcsim for Armillary's tests: VMware's vCenter simulator (govmomi, Debian's golang-github-vmware-govmomi-dev)
// with the default VPX inventory (datacenter DC0, cluster DC0_C0, host DC0_H0, datastore LocalDS_0, networks
// "VM Network" and DC0_DVPG0), plus a template "armillary-template" (a clone of DC0_C0_RP0_VM0, one disk,
// one NIC) and an empty VM folder "armillary". Plain http on 127.0.0.1; logins are checked against
// -username/-password. Prints the SDK URL (without credentials) on one line, then serves until it gets
// SIGTERM/SIGINT or its stdin is closed (so it never outlives the test run that started it).
//
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim main.go
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free one)")
	username := flag.String("username", "armillary", "the only user name accepted")
	password := flag.String("password", "vcsim", "its password")
	delays := flag.String("method-delay", "", "slow methods down: Method=ms[,Method=ms...], e.g. PowerOnVM_Task=2000")
	flag.Parse()

	model := simulator.VPX()
	model.DelayConfig.MethodDelay = map[string]int{}
	for _, item := range strings.Split(*delays, ",") {
		if name, ms, ok := strings.Cut(item, "="); ok {
			n, err := strconv.Atoi(ms)
			if err != nil {
				log.Fatalf("-method-delay %q: %v", item, err)
			}
			model.DelayConfig.MethodDelay[name] = n
		}
	}
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	server := model.Service.NewServer()
	defer server.Close()

	ctx := context.Background()
	client, err := govmomi.NewClient(ctx, server.URL, true)
	if err != nil {
		log.Fatal(err)
	}
	finder := find.NewFinder(client.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	must(err)
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	must(err)
	source, err := finder.VirtualMachine(ctx, "DC0_C0_RP0_VM0")
	must(err)
	task, err := source.Clone(ctx, folders.VmFolder, "armillary-template", types.VirtualMachineCloneSpec{Template: true})
	must(err)
	must(task.Wait(ctx))
	_, err = folders.VmFolder.CreateFolder(ctx, "armillary")
	must(err)
	must(client.Logout(ctx))

	shown := *server.URL
	shown.User = nil
	fmt.Println(shown.String())

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); done <- syscall.SIGTERM }()
	<-done
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
