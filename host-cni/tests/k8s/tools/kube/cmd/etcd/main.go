// etcd for the test command's kube-apiserver, built from etcd's own server module
// (go.etcd.io/etcd/server/v3/etcdmain is etcd's main).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
