# Entry point of the stand-in image (run by busybox sh). The compose file's `command:` for
# the real image arrives as arguments; it is only echoed, so `logs` shows which service this is.
echo "stand-in service up; arguments: $*"
for port in 13133 9090 3100 3000; do
    /bin/busybox httpd -p "$port" -h /www
done
echo "answering readiness on 13133, 9090, 3100, 3000"
trap 'echo "stand-in stopping"; exit 0' TERM INT
while :; do
    /bin/busybox sleep 1 &
    wait $!
done
