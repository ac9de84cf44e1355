from trio_sock.cli import main_exit

main_exit()
