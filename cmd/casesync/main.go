// Command casesync is the caseworker's command-line client.
package main

import (
	"fmt"
	"os"

	"github.com/casesync/casesync/syncproto"
)

func main() {
	fmt.Fprintf(os.Stderr, "casesync (protocol %d): the client commands arrive with issue 4\n", syncproto.Version)
	os.Exit(2)
}
