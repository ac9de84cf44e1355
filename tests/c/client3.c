/*  client3.c: the sockets chapter's network client, from Beginning Linux
    Programming (ch. 15): client1 moved to TCP on 127.0.0.1, port 9734 in
    network byte order.  Unchanged but for the includes and `int main` needed
    to compile cleanly with gcc -Wall -Werror -O0 (-O0 as the tests build it:
    the book ignores what write and read return, which glibc's fortified
    headers, on only when optimising, would flag), and an optional argv[1] whose
    first byte replaces the default 'A', so that the tests can check other
    values.  */

/*  Make the necessary includes and set up the variables.  */

#include <sys/types.h>
#include <sys/socket.h>
#include <stdio.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <stdlib.h>

int main(int argc, char *argv[])
{
    int sockfd;
    int len;
    struct sockaddr_in address;
    int result;
    char ch = 'A';

    if(argc > 1)
        ch = argv[1][0];

/*  Create a socket for the client.  */

    sockfd = socket(AF_INET, SOCK_STREAM, 0);

/*  Name the socket, as agreed with the server.  */

    address.sin_family = AF_INET;
    address.sin_addr.s_addr = inet_addr("127.0.0.1");
    address.sin_port = htons(9734);
    len = sizeof(address);

/*  Now connect our socket to the server's socket.  */

    result = connect(sockfd, (struct sockaddr *)&address, len);

    if(result == -1) {
        perror("oops: client3");
        exit(1);
    }

/*  We can now read/write via sockfd.  */

    write(sockfd, &ch, 1);
    read(sockfd, &ch, 1);
    printf("char from server = %c\n", ch);
    close(sockfd);
    exit(0);
}
