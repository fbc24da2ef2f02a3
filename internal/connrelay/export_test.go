package connrelay

// Queued reports how many operations wait for a batch.
func (c *Client) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
