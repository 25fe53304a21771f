package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/casesync/casesync/syncproto"
)

// The admin API, under /v1/admin, authenticated with the admin token:
//
//	POST /users                    {name, role, areas}        create a user
//	PUT  /users/:name/areas        {areas}                    replace a user's areas
//	GET  /users                                               list users
//	POST /devices                  {user, label}              enroll: {device, token}
//	GET  /devices                                             list devices
//	POST /devices/:id/revoke                                  revoke a device
//	GET  /conflicts?area=A                                    records with open conflicts

var errAdminAuth = &syncproto.Error{Code: syncproto.CodeAuth, Reason: "admin", Message: "admin API: send the admin token as 'Authorization: Bearer <token>' (see <data>/admin.token)"}

func (s *Server) authAdmin(c *fiber.Ctx) error {
	tok, ok := bearer(c.Get(fiber.HeaderAuthorization))
	if !ok || !equalHash(s.cfg.AdminTokenHash, HashToken(tok)) {
		return c.Status(http.StatusUnauthorized).JSON(errAdminAuth)
	}
	return c.Next()
}

func (s *Server) adminRoutes(r fiber.Router) {
	r.Post("/users", s.adminAddUser)
	r.Put("/users/:name/areas", s.adminSetAreas)
	r.Get("/users", s.adminUsers)
	r.Post("/devices", s.adminEnroll)
	r.Get("/devices", s.adminDevices)
	r.Post("/devices/:id/revoke", s.adminRevoke)
	r.Get("/conflicts", s.adminConflicts)
}

func badRequest(format string, args ...any) error {
	return syncproto.Errorf(&syncproto.Error{Code: syncproto.CodeValidation, Reason: "admin"}, format, args...)
}

var errNoUser = &syncproto.Error{Code: syncproto.CodeValidation, Reason: "no_user", Message: "no such user"}

func adminCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func checkAreas(areas []string) ([]string, error) {
	out := make([]string, 0, len(areas))
	for _, a := range areas {
		a = strings.TrimSpace(a)
		if !syncproto.ValidArea(a) {
			return nil, badRequest("area %q is not a valid area name", a)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *Server) adminAddUser(c *fiber.Ctx) error {
	var u User
	if err := c.BodyParser(&u); err != nil {
		return badRequest("body must be JSON {name, role, areas}")
	}
	if !syncproto.ValidID(u.Name) {
		return badRequest("user name %q: use 1 to 64 letters, digits, '-' or '_'", u.Name)
	}
	if u.Role != syncproto.RoleCaseworker && u.Role != syncproto.RoleLead {
		return badRequest("role must be %s or %s", syncproto.RoleCaseworker, syncproto.RoleLead)
	}
	areas, err := checkAreas(u.Areas)
	if err != nil {
		return err
	}
	u.Areas = areas
	ctx, cancel := adminCtx()
	defer cancel()
	err = s.store.Update(ctx, func(tx Tx) error {
		if _, err := tx.User(u.Name); err == nil {
			return syncproto.Errorf(&syncproto.Error{Code: syncproto.CodeValidation, Reason: "exists"}, "user %q exists; use set-areas to change their areas", u.Name)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		return tx.PutUser(u)
	})
	if err != nil {
		return err
	}
	s.log.Info("admin: user added", "role", u.Role, "areas", len(u.Areas))
	return c.Status(http.StatusCreated).JSON(u)
}

func (s *Server) adminSetAreas(c *fiber.Ctx) error {
	var body struct {
		Areas []string `json:"areas"`
	}
	if err := c.BodyParser(&body); err != nil {
		return badRequest("body must be JSON {areas}")
	}
	areas, err := checkAreas(body.Areas)
	if err != nil {
		return err
	}
	name := c.Params("name")
	var u User
	ctx, cancel := adminCtx()
	defer cancel()
	err = s.store.Update(ctx, func(tx Tx) error {
		var err error
		if u, err = tx.User(name); errors.Is(err, ErrNotFound) {
			return syncproto.Errorf(errNoUser, "no user %q", name)
		} else if err != nil {
			return err
		}
		u.Areas = areas
		return tx.PutUser(u)
	})
	if err != nil {
		return err
	}
	s.hub.userChanged(u.Name)
	s.log.Info("admin: user areas set", "areas", len(u.Areas))
	return c.JSON(u)
}

func (s *Server) adminUsers(c *fiber.Ctx) error {
	var users []User
	ctx, cancel := adminCtx()
	defer cancel()
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		users, err = tx.Users()
		return err
	})
	if err != nil {
		return err
	}
	if users == nil {
		users = []User{}
	}
	return c.JSON(users)
}

// Enrollment is the answer to a device enrollment: the token is shown
// this once and stored only as a hash.
type Enrollment struct {
	Device DeviceInfo `json:"device"`
	Token  string     `json:"token"`
}

// DeviceInfo is a device as the admin API shows it: never its token hash.
type DeviceInfo struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Label    string    `json:"label,omitempty"`
	Created  time.Time `json:"created"`
	Revoked  time.Time `json:"revoked,omitzero"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Online   bool      `json:"online"`
}

func (s *Server) info(d Device) DeviceInfo {
	return DeviceInfo{ID: d.ID, User: d.User, Label: d.Label, Created: d.Created, Revoked: d.Revoked, LastSeen: d.LastSeen, Online: s.hub.online(d.ID)}
}

func (s *Server) adminEnroll(c *fiber.Ctx) error {
	var body struct {
		User  string `json:"user"`
		Label string `json:"label"`
	}
	if err := c.BodyParser(&body); err != nil {
		return badRequest("body must be JSON {user, label}")
	}
	if len(body.Label) > 128 {
		return badRequest("label longer than 128 bytes")
	}
	tok := NewToken()
	d := Device{ID: newID("d"), User: body.User, Label: body.Label, TokenHash: HashToken(tok), Created: s.cfg.Now().UTC()}
	ctx, cancel := adminCtx()
	defer cancel()
	err := s.store.Update(ctx, func(tx Tx) error {
		if _, err := tx.User(body.User); errors.Is(err, ErrNotFound) {
			return syncproto.Errorf(errNoUser, "no user %q; add the user first", body.User)
		} else if err != nil {
			return err
		}
		return tx.PutDevice(d)
	})
	if err != nil {
		return err
	}
	s.log.Info("admin: device enrolled", "device", d.ID)
	return c.Status(http.StatusCreated).JSON(Enrollment{Device: s.info(d), Token: tok})
}

func (s *Server) adminDevices(c *fiber.Ctx) error {
	var devs []Device
	ctx, cancel := adminCtx()
	defer cancel()
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		devs, err = tx.Devices()
		return err
	})
	if err != nil {
		return err
	}
	out := make([]DeviceInfo, 0, len(devs))
	for _, d := range devs {
		out = append(out, s.info(d))
	}
	return c.JSON(out)
}

func (s *Server) adminRevoke(c *fiber.Ctx) error {
	id := c.Params("id")
	var d Device
	ctx, cancel := adminCtx()
	defer cancel()
	err := s.store.Update(ctx, func(tx Tx) error {
		var err error
		if d, err = tx.Device(id); errors.Is(err, ErrNotFound) {
			return syncproto.Errorf(&syncproto.Error{Code: syncproto.CodeValidation, Reason: "no_device"}, "no device %q", id)
		} else if err != nil {
			return err
		}
		if d.Revoked.IsZero() {
			d.Revoked = s.cfg.Now().UTC()
		}
		return tx.PutDevice(d)
	})
	if err != nil {
		return err
	}
	s.hub.revoke(d.ID)
	s.log.Info("admin: device revoked", "device", d.ID)
	return c.JSON(s.info(d))
}

// ConflictInfo is a record with open conflicts, as the admin API shows it.
// Values are shown as stored; the admin token already grants full access.
type ConflictInfo struct {
	Collection syncproto.Collection `json:"coll"`
	ID         string               `json:"id"`
	Area       string               `json:"area"`
	Conflicts  []syncproto.Conflict `json:"conflicts"`
}

func (s *Server) adminConflicts(c *fiber.Ctx) error {
	area := c.Query("area")
	out := []ConflictInfo{}
	ctx, cancel := adminCtx()
	defer cancel()
	err := s.store.View(ctx, func(tx Tx) error {
		return tx.Conflicts(func(k syncproto.Key, a string) error {
			if area != "" && a != area {
				return nil
			}
			r, _, err := tx.Record(k)
			if err != nil {
				return err
			}
			if cs := r.Conflicts(); len(cs) > 0 {
				out = append(out, ConflictInfo{Collection: k.Collection, ID: k.ID, Area: r.Area, Conflicts: cs})
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	return c.JSON(out)
}
