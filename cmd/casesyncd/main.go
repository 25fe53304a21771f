// Command casesyncd is casesync's sync server.
package main

import (
	"fmt"
	"os"

	"github.com/casesync/casesync/syncproto"
)

func main() {
	fmt.Fprintf(os.Stderr, "casesyncd (protocol %d): the server arrives with issue 3\n", syncproto.Version)
	os.Exit(2)
}
