package ecslocal

import (
	"fmt"
	"net/netip"
)

// addrPool hands out task addresses so no two live tasks share one; a stopped task's
// address is free again, and the lowest free address is taken first, as a subnet reuses
// the addresses of deleted ENIs. Like a VPC subnet, the pool keeps its first four addresses
// (the first after the network address is the gateway the metadata reports) and its last.
type addrPool struct {
	prefix netip.Prefix
	inUse  map[netip.Addr]bool
}

func newAddrPool(p netip.Prefix) (*addrPool, error) {
	p = p.Masked()
	loop := netip.MustParsePrefix("127.0.0.0/8")
	if !p.Addr().Is4() || p.Bits() < loop.Bits() || !loop.Contains(p.Addr()) {
		return nil, fmt.Errorf("address pool %s is not inside %s", p, loop)
	}
	if p.Bits() > 29 {
		return nil, fmt.Errorf("address pool %s is too small", p)
	}
	return &addrPool{prefix: p, inUse: map[netip.Addr]bool{}}, nil
}

func (p *addrPool) take() (netip.Addr, bool) {
	for a := p.prefix.Addr(); p.prefix.Contains(a); a = a.Next() {
		if p.usable(a) && !p.inUse[a] {
			p.inUse[a] = true
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (p *addrPool) release(a netip.Addr) { delete(p.inUse, a) }

func (p *addrPool) usable(a netip.Addr) bool {
	b := a.As4()
	first := p.prefix.Addr()
	reserved := a == first || a == first.Next() || a == first.Next().Next() || a == first.Next().Next().Next()
	last := a.Next() == netip.Addr{} || !p.prefix.Contains(a.Next())
	return !reserved && !last && a != netip.MustParseAddr("127.0.0.1") && b[3] != 0 && b[3] != 255
}
