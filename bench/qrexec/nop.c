// qrexec_bench's baseline process: exits at once. Statically linked, so spawning it costs
// what creating and tearing down any process costs, nothing more.
int main(void) { return 0; }
